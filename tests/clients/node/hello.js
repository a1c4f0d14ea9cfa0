'use strict';
// Loads tests/clients/proto/hello.proto at runtime with @grpc/proto-loader.
const path = require('path');

const PROTO = path.join(__dirname, '..', 'proto', 'hello.proto');

function loadHello(grpc) {
  const protoLoader = require('@grpc/proto-loader');
  const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true });
  return grpc.loadPackageDefinition(def).capstan.test.hello;
}

module.exports = { loadHello, PROTO };
