#!/usr/bin/env node
// Proxyless gRPC client (Node, @grpc/grpc-js + @grpc/grpc-js-xds) for Capstan end-to-end tests.
//
// Calls capstan.test.hello.Greeter/SayHello on --target a number of times and prints a JSON
// summary on stdout: which backend answered each call and the status codes.
//
//   node xds_client.js --target xds:///echo.default.svc:8080 --calls 10 [--bootstrap FILE]
//
// For xds:/// targets the bootstrap comes from GRPC_XDS_BOOTSTRAP (or --bootstrap, which sets it).
// Plain targets (127.0.0.1:PORT) work too. Exit status: 0 when the summary was printed and
// (with --require-ok) every call succeeded; 1 otherwise.
'use strict';

const path = require('path');

function parseArgs(argv) {
  const args = {
    target: 'xds:///some.host:1234',
    calls: 1,
    timeout: 5,
    bootstrap: null,
    name: 'capstan-node-client',
    waitForReady: false,
    requireOk: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--target': args.target = next(); break;
      case '--calls': args.calls = Number(next()); break;
      case '--timeout': args.timeout = Number(next()); break;
      case '--bootstrap': args.bootstrap = path.resolve(next()); break;
      case '--name': args.name = next(); break;
      case '--wait-for-ready': args.waitForReady = true; break;
      case '--require-ok': args.requireOk = true; break;
      case '-h': case '--help':
        console.log('usage: xds_client.js [--target T] [--calls N] [--timeout SECS] [--bootstrap FILE] ' +
          '[--name NAME] [--wait-for-ready] [--require-ok]');
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(args.calls) || args.calls < 0 || args.calls > 100000) {
    throw new Error('--calls must be an integer within 0..100000');
  }
  if (!(args.timeout > 0)) throw new Error('--timeout must be > 0');
  return args;
}

function statusName(grpc, code) {
  for (const [name, value] of Object.entries(grpc.status)) {
    if (value === code) return name;
  }
  return String(code);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.bootstrap) process.env.GRPC_XDS_BOOTSTRAP = args.bootstrap;

  const grpc = require('@grpc/grpc-js');
  const grpcXds = require('@grpc/grpc-js-xds');
  grpcXds.register(); // installs the xds: resolver and the xDS load-balancing policies
  const { loadHello } = require('./hello');
  const hello = loadHello(grpc);

  const client = new hello.Greeter(args.target, grpc.credentials.createInsecure());
  const results = [];
  const started = Date.now();
  for (let i = 0; i < args.calls; i++) {
    const t0 = Date.now();
    const entry = await new Promise((resolve) => {
      client.SayHello(
        { name: args.name },
        new grpc.Metadata({ waitForReady: args.waitForReady }),
        { deadline: new Date(Date.now() + args.timeout * 1000) },
        (err, reply) => {
          if (err) resolve({ call: i, code: statusName(grpc, err.code), backend: null, details: err.details });
          else resolve({ call: i, code: 'OK', backend: reply.backend, message: reply.message });
        },
      );
    });
    entry.millis = Date.now() - t0;
    results.push(entry);
  }
  client.close();

  const byCode = {};
  const byBackend = {};
  for (const r of results) {
    byCode[r.code] = (byCode[r.code] || 0) + 1;
    if (r.backend !== null) byBackend[r.backend] = (byBackend[r.backend] || 0) + 1;
  }
  const summary = {
    client: 'node',
    grpc_version: require('@grpc/grpc-js/package.json').version,
    target: args.target,
    bootstrap: process.env.GRPC_XDS_BOOTSTRAP || null,
    calls: args.calls,
    ok: byCode.OK || 0,
    by_code: byCode,
    by_backend: byBackend,
    elapsed_ms: Date.now() - started,
    results,
  };
  const ok = !args.requireOk || (byCode.OK || 0) === args.calls;
  // xDS watchers may keep timers alive: exit explicitly, but only once the summary is flushed
  // (process.exit would cut a piped write at the pipe's 64 KiB buffer).
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(ok ? 0 : 1));
}

main().catch((e) => {
  console.error(`xds_client.js: ${e && e.stack ? e.stack : e}`);
  process.exit(2);
});
