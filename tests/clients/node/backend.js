#!/usr/bin/env node
// A tiny gRPC backend (capstan.test.hello.Greeter) that replies with its own name.
//   node backend.js --name b1 [--host 127.0.0.1] [--port 0] [--max-seconds 600]
// Prints `LISTENING <host>:<port>` once serving; exits on SIGTERM/SIGINT or after --max-seconds.
'use strict';

const grpc = require('@grpc/grpc-js');
const { loadHello } = require('./hello');

const opts = { name: null, host: '127.0.0.1', port: 0, maxSeconds: 600 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const v = argv[i + 1];
  switch (argv[i]) {
    case '--name': opts.name = v; i++; break;
    case '--host': opts.host = v; i++; break;
    case '--port': opts.port = Number(v); i++; break;
    case '--max-seconds': opts.maxSeconds = Number(v); i++; break;
    default: console.error(`unknown argument ${argv[i]}`); process.exit(2);
  }
}
if (!opts.name) { console.error('--name is required'); process.exit(2); }

const hello = loadHello(grpc);
const server = new grpc.Server();
server.addService(hello.Greeter.service, {
  SayHello: (call, cb) => cb(null, { message: `hello ${call.request.name} from ${opts.name}`, backend: opts.name }),
});
server.bindAsync(`${opts.host}:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) { console.error(`bind failed: ${err.message}`); process.exit(2); }
  console.log(`LISTENING ${opts.host}:${port}`);
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, opts.maxSeconds * 1000).unref();
