#!/usr/bin/env node
// make_cases.js: ONNX Runtime (CPU) outputs for the generated ONNX node tests.
//
//   node make_cases.js [DIR]     (DIR defaults to ../../testdata/onnx-cases; `make refs` runs it
//                                 after pd_onnx_cases --out has written the models and inputs)
//
// For every DIR/test_*/ it loads model.onnx with onnxruntime-node (CPU execution provider,
// graphOptimizationLevel "disabled" so that the op under test runs as written, one thread),
// reads test_data_set_0/input_<i>.pb (TensorProto with raw_data, as pd_onnx_cases writes them),
// runs the model once and writes test_data_set_0/output_<i>.pb for the i-th graph output: a
// TensorProto with dims (field 1), data_type (2), name (8) and raw_data (9), encoded here by hand.
// A model ONNX Runtime refuses stops the generator, naming the case: every generated case must
// have a reference.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const DIR = process.argv[2] || path.resolve(__dirname, '..', '..', 'testdata', 'onnx-cases');

// ONNX TensorProto.DataType <-> onnxruntime-common tensor type.
const ORT_TYPE = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64',
  9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64',
};
const ONNX_TYPE = Object.fromEntries(Object.entries(ORT_TYPE).map(([k, v]) => [v, Number(k)]));
const ARRAY = {
  float32: Float32Array, uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array,
  int16: Int16Array, int32: Int32Array, int64: BigInt64Array, bool: Uint8Array,
  float16: Uint16Array, float64: Float64Array, uint32: Uint32Array, uint64: BigUint64Array,
};

// ---- protobuf wire format (the few fields of TensorProto used here) ----
function readVarint(buf, pos) {
  let v = 0n, shift = 0n;
  for (;;) {
    const b = buf[pos++];
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [v, pos];
    shift += 7n;
  }
}

function decodeTensor(buf) {
  const t = { dims: [], dataType: 0, name: '', raw: null };
  let pos = 0;
  while (pos < buf.length) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Number(key >> 3n), wire = Number(key & 7n);
    if (wire === 0) {
      let v;
      [v, pos] = readVarint(buf, pos);
      if (field === 1) t.dims.push(Number(v));
      else if (field === 2) t.dataType = Number(v);
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      const body = buf.subarray(pos, pos + Number(len));
      pos += Number(len);
      if (field === 1) {  // packed dims
        for (let p = 0; p < body.length;) { let v; [v, p] = readVarint(body, p); t.dims.push(Number(v)); }
      } else if (field === 8) t.name = body.toString('utf8');
      else if (field === 9) t.raw = Buffer.from(body);
      else throw new Error(`TensorProto field ${field} is not supported here (want raw_data)`);
    } else if (wire === 5) pos += 4;
    else if (wire === 1) pos += 8;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  if (t.raw === null) throw new Error(`tensor '${t.name}' has no raw_data`);
  return t;
}

function varint(n) {
  let v = BigInt(n);
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}

function field(num, wire) { return varint((num << 3) | wire); }

function encodeTensor(name, dataType, dims, raw) {
  const parts = [];
  for (const d of dims) parts.push(field(1, 0), varint(d));
  parts.push(field(2, 0), varint(dataType));
  const nb = Buffer.from(name, 'utf8');
  parts.push(field(8, 2), varint(nb.length), nb);
  parts.push(field(9, 2), varint(raw.length), raw);
  return Buffer.concat(parts);
}

function toOrt(t) {
  const type = ORT_TYPE[t.dataType];
  if (!type) throw new Error(`input '${t.name}': data type ${t.dataType} is not handled`);
  const Arr = ARRAY[type];
  const copy = new Uint8Array(t.raw.length);
  copy.set(t.raw);
  const data = new Arr(copy.buffer, 0, t.raw.length / Arr.BYTES_PER_ELEMENT);
  return new ort.Tensor(type, data, t.dims);
}

function rawOf(tensor) {
  const d = tensor.data;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

async function runCase(dir) {
  const name = path.basename(dir);
  const ds = path.join(dir, 'test_data_set_0');
  let session;
  try {
    session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), {
      executionProviders: ['cpu'], graphOptimizationLevel: 'disabled', intraOpNumThreads: 1, logSeverityLevel: 3,
    });
  } catch (e) {
    throw new Error(`${name}: ONNX Runtime refuses the model: ${e.message}`);
  }
  const feeds = {};
  for (let i = 0; ; ++i) {
    const f = path.join(ds, `input_${i}.pb`);
    if (!fs.existsSync(f)) break;
    const t = decodeTensor(fs.readFileSync(f));
    feeds[t.name] = toOrt(t);
  }
  for (const f of fs.readdirSync(ds)) if (f.startsWith('output_')) fs.unlinkSync(path.join(ds, f));
  let results;
  try {
    results = await session.run(feeds);
  } catch (e) {
    throw new Error(`${name}: ONNX Runtime fails to run it: ${e.message}`);
  }
  session.outputNames.forEach((out, i) => {
    const t = results[out];
    const dataType = ONNX_TYPE[t.type];
    if (!dataType) throw new Error(`${name}: output '${out}' has type ${t.type}, not handled`);
    fs.writeFileSync(path.join(ds, `output_${i}.pb`), encodeTensor(out, dataType, t.dims, rawOf(t)));
  });
  await session.release();
}

async function main() {
  const cases = fs.readdirSync(DIR).filter((d) => d.startsWith('test_')).sort();
  for (const c of cases) await runCase(path.join(DIR, c));
  console.log(`onnxruntime-node ${require('onnxruntime-node/package.json').version}: ` +
              `wrote the outputs of ${cases.length} cases in ${DIR}`);
}

main().catch((e) => { console.error(e.message); process.exit(1); });
