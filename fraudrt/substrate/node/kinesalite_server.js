// kinesalite's CLI cannot bind to a chosen host; this wrapper binds 127.0.0.1 (or KINESALITE_HOST).
//
// It also cuts kinesalite's CPU per record (PutRecords ~127 -> ~42 us, GetRecords ~57 -> ~31 us; see
// docs/performance.md) by patching at startup, never under node_modules: kinesalite's db/validation
// helpers are module exports the actions look up at call time, so exact, cheaper equivalents are
// swapped in; anything outside the common, checked shape falls through to kinesalite's own function,
// so results, thrown errors and on-disk keys are unchanged. Plus two LevelDB tuning options.
const { createRequire } = require('module');
// Resolve from kinesalite's own entry point, so these are the very module instances it loads.
const kreq = createRequire(require.resolve('kinesalite'));
const kdb = kreq('./db');
const kval = kreq('./validations');
const putRecordsTypes = kreq('./validations/putRecords').types;
const BigNumber = kreq('bignumber.js');
const crypto = require('crypto');

const origParseSequence = kdb.parseSequence;
const origStringifySequence = kdb.stringifySequence;
const origPartitionKeyToHashKey = kdb.partitionKeyToHashKey;
const P124 = 1n << 124n;
const P185 = 1n << 185n;
const P185_NEXT = (P185 * 3n) / 2n;
const DIGITS = /^[0-9]{1,80}$/;
const LOWER_HEX = /^[0-9a-f]+$/;

// Why: parseSequence's BigNumber(seq).toString(16) ran per record (PutRecords: the shard's start seq;
// GetRecords: every record read). Version-2 sequences (all kinesalite writes) take BigInt; the rest,
// and every input that would throw, go to the original.
function parseSequence(seq) {
  if (typeof seq !== 'string' || !DIGITS.test(seq)) return origParseSequence(seq);
  let n = BigInt(seq);
  if (n < P124) n += P124;
  if (!(n > P185 && n < P185_NEXT)) return origParseSequence(seq);
  const hex = n.toString(16);
  if (hex.charCodeAt(hex.length - 1) !== 50 /* '2' */) return origParseSequence(seq);
  const seqIxHex = hex.slice(11, 27);
  let shardIxHex = hex.slice(38, 46);
  if (parseInt(seqIxHex[0], 16) > 7) return origParseSequence(seq);
  if (parseInt(shardIxHex[0], 16) > 7) shardIxHex = '-' + shardIxHex;
  const shardCreateSecs = parseInt(hex.slice(1, 10), 16);
  if (shardCreateSecs >= 16025175000) return origParseSequence(seq);
  return {
    shardCreateTime: shardCreateSecs * 1000,
    seqIx: BigInt('0x' + seqIxHex).toString(),
    byte1: hex.slice(27, 29),
    seqTime: parseInt(hex.slice(29, 38), 16) * 1000,
    shardIx: parseInt(shardIxHex, 16),
    version: 2,
  };
}

// Why: stringifySequence's BigNumber(hex, 16).toFixed() ran once per record put. Same hex string is
// built; only a lowercase-hex result with a plain integer seqIx takes BigInt, else the original.
function stringifySequence(obj) {
  if (obj.version != null && obj.version != 2) return origStringifySequence(obj);
  const seqIx = obj.seqIx || 0;
  let seqIxHex;
  if (typeof seqIx === 'number' && Number.isSafeInteger(seqIx) && seqIx >= 0) seqIxHex = seqIx.toString(16);
  else if (typeof seqIx === 'string' && DIGITS.test(seqIx)) seqIxHex = BigInt(seqIx).toString(16);
  else return origStringifySequence(obj);
  const hex = [
    '2',
    ('00000000' + Math.floor(obj.shardCreateTime / 1000).toString(16)).slice(-9),
    (obj.shardIx || 0).toString(16).slice(-1),
    ('0000000000000000' + seqIxHex).slice(-16),
    obj.byte1 || '00',
    ('00000000' + Math.floor((obj.seqTime || obj.shardCreateTime) / 1000).toString(16)).slice(-9),
    kdb.shardIxToHex(obj.shardIx),
    '2',
  ].join('');
  if (!LOWER_HEX.test(hex)) return origStringifySequence(obj);
  return BigInt('0x' + hex).toString();
}

// Why: kinesalite's incrementSequence calls its module-local parse/stringify, not the exports;
// same body, routed through the replacements above.
function incrementSequence(seqObj, seqTime) {
  if (typeof seqObj == 'string') seqObj = kdb.parseSequence(seqObj);
  return kdb.stringifySequence({
    shardCreateTime: seqObj.shardCreateTime,
    seqIx: seqObj.seqIx,
    seqTime: seqTime || (seqObj.seqTime + 1000),
    shardIx: seqObj.shardIx,
  });
}

// Why: new BigNumber(md5hex, 16) is a base conversion per record, and each shard-range comparedTo
// re-parsed the range's 39-digit decimal string. An equal BigNumber is built from BigInt's decimal
// string, and comparedTo(string) reuses parsed range bounds (a few per stream; bounded cache).
const rangeBounds = new Map();
class HashKey extends BigNumber {
  comparedTo(y, b) {
    if (b !== undefined || typeof y !== 'string') return super.comparedTo(y, b);
    let bound = rangeBounds.get(y);
    if (bound === undefined) {
      if (rangeBounds.size >= 4096) rangeBounds.clear();
      bound = new BigNumber(y);
      rangeBounds.set(y, bound);
    }
    return super.comparedTo(bound);
  }
}
const md5hex = typeof crypto.hash === 'function' ? (s) => crypto.hash('md5', s, 'hex')
  : (s) => crypto.createHash('md5').update(s, 'utf8').digest('hex');
function partitionKeyToHashKey(partitionKey) {
  if (typeof partitionKey !== 'string') return origPartitionKeyToHashKey(partitionKey);
  return new HashKey(BigInt('0x' + md5hex(partitionKey)).toString());
}

// Why: for PutRecords, checkTypes ran a base64 regex plus a decode/re-encode per record, and
// checkValidations walked every record's rules and decoded Data again. For the plain shape
// (only StreamName/Records, records with only string PartitionKey/Data) one decode/re-encode proves
// Data canonical base64, which implies both of the original's Blob checks pass; the result is
// built with the same keys in the same order. A request the checks below would reject, or any
// other shape, goes to kinesalite's own functions, so every error is theirs.
const origCheckTypes = kval.checkTypes;
const origCheckValidations = kval.checkValidations;
const STREAM_NAME = /^[a-zA-Z0-9_.-]+$/; // = RegExp('^' + putRecordsTypes.StreamName.regex + '$')
const MAX_B64_CHARS = 1398000; // decodes to <= 1398000 * 3 / 4 + 2 < 1048576 bytes (Data's max)
function putRecordsCheckTypes(data) {
  for (const key in data) if (key !== 'Records' && key !== 'StreamName') return null;
  const records = data.Records;
  const name = data.StreamName;
  if (!Array.isArray(records) || typeof name !== 'string') return null;
  const out = new Array(records.length);
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    if (r === null || typeof r !== 'object' || Array.isArray(r)) return null;
    for (const key in r) if (key !== 'PartitionKey' && key !== 'Data') return null;
    const pk = r.PartitionKey;
    const d = r.Data;
    if (typeof pk !== 'string' || typeof d !== 'string') return null;
    if (Buffer.from(d, 'base64').toString('base64') !== d) return null;
    out[i] = { PartitionKey: pk, Data: d };
  }
  return { Records: out, StreamName: name };
}
function putRecordsValid(data) {
  const records = data.Records;
  const name = data.StreamName;
  if (!Array.isArray(records) || records.length < 1 || records.length > 500) return false;
  if (typeof name !== 'string' || name.length < 1 || name.length > 128 || !STREAM_NAME.test(name)) return false;
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    if (r === null || typeof r !== 'object' || r.ExplicitHashKey != null) return false;
    const pk = r.PartitionKey;
    const d = r.Data;
    if (typeof pk !== 'string' || pk.length < 1 || pk.length > 256) return false;
    if (typeof d !== 'string' || d.length > MAX_B64_CHARS) return false;
  }
  return true;
}
function checkTypes(data, types) {
  if (types === putRecordsTypes && data !== null && typeof data === 'object') {
    const fast = putRecordsCheckTypes(data);
    if (fast !== null) return fast;
  }
  return origCheckTypes.apply(this, arguments);
}
function checkValidations(data, types, custom) {
  if (types === putRecordsTypes && custom == null && data !== null && typeof data === 'object' &&
      putRecordsValid(data)) return;
  return origCheckValidations.apply(this, arguments);
}

// Why: LevelDB's default 4 MB write buffer made its background thread rewrite the record data over
// and over (L0 flushes, L0->L1 compactions): ~15 us of CPU per ~1 KB record put. 32 MB cuts that by
// more than half. Same WAL and sync setting, so what survives a kill -9 is unchanged (a restart
// replays at most ~32 MB of log: ~0.5 s instead of ~0.3 s).
const LevelDOWN = kreq('leveldown');
const WRITE_BUFFER_SIZE = 32 * 1024 * 1024;
const origOpen = LevelDOWN.prototype._open;
LevelDOWN.prototype._open = function (options, callback) {
  const opts = Object.assign({}, options);
  if (opts.writeBufferSize == null) opts.writeBufferSize = WRITE_BUFFER_SIZE;
  return origOpen.call(this, opts, callback);
};
// Why: GetRecords reads a range through a LevelDB iterator that fetched 16 KB (~16 records) per
// thread-pool round trip; 256 KB batches cut GetRecords CPU by ~25%. Batch size only: the iterator
// reads the same snapshot in the same order (at most one batch is read past the Limit).
const ITERATOR_HIGH_WATER_MARK = 256 * 1024;
const origIterator = LevelDOWN.prototype._iterator;
LevelDOWN.prototype._iterator = function (options) {
  if (options && options.highWaterMark == null) {
    options = Object.assign({}, options, { highWaterMark: ITERATOR_HIGH_WATER_MARK });
  }
  return origIterator.call(this, options);
};

kdb.parseSequence = parseSequence;
kdb.stringifySequence = stringifySequence;
kdb.incrementSequence = incrementSequence;
kdb.partitionKeyToHashKey = partitionKeyToHashKey;
kval.checkTypes = checkTypes;
kval.checkValidations = checkValidations;

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
