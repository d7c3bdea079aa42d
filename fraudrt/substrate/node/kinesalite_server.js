// kinesalite's CLI cannot bind to a chosen host; this wrapper binds 127.0.0.1 (or KINESALITE_HOST).
const kinesalite = require('kinesalite');
const port = parseInt(process.env.KINESALITE_PORT, 10);
const host = process.env.KINESALITE_HOST || '127.0.0.1';
const path = process.env.KINESALITE_PATH;
// kinesalite's default account shard limit (10) is used up by the seed's 10 single-shard streams: a
// second, prefixed set (tests' private streams) or shard_count > 1 failed with LimitExceededException.
// A local server has no account limit to mimic.
const shardLimit = parseInt(process.env.KINESALITE_SHARD_LIMIT || '100000', 10);
const server = kinesalite({ path, shardLimit, createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50 });
server.listen(port, host, (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(`kinesalite listening on ${host}:${port} path=${path}`);
});
const shutdown = () => server.close(() => process.exit(0));
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
