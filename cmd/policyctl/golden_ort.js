#!/usr/bin/env node
// golden_ort.js: the expected outputs of golden cases under ONNX Runtime (onnxruntime-node, CPU
// execution provider, graphOptimizationLevel "all", intraOpNumThreads 1: the session
// tools/reference/make_refs.js uses). policyctl artifacts add --golden-from onnxruntime embeds
// and runs it:
//
//   NODE_PATH=DIR/node_modules node golden_ort.js MODEL.onnx REQUEST.json > RESPONSE.json
//
// REQUEST: {"cases": [{"name", "inputs": [{name, datatype, shape, data}]}]}
// RESPONSE: {"generator": "onnxruntime-node X.Y.Z", "cases": [{"name", "outputs": [...],
// "stochastic": [names]}]}, every output of the model in its order, values as the exact float32
// (or float64) printed as the shortest round-trip double, int64 as JSON integers. Each case runs
// RUNS times; an output whose bytes change between runs is listed under "stochastic" (a sampled
// head: ONNX Runtime's random ops are unseeded) and left out of "outputs".
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

const RUNS = 20;
const ORT_VERSION = require('onnxruntime-node/package.json').version;

const ARRAYS = {
  FP32: ['float32', Float32Array], FP64: ['float64', Float64Array],
  INT8: ['int8', Int8Array], INT16: ['int16', Int16Array], INT32: ['int32', Int32Array],
  INT64: ['int64', BigInt64Array], UINT8: ['uint8', Uint8Array], UINT16: ['uint16', Uint16Array],
  UINT32: ['uint32', Uint32Array], UINT64: ['uint64', BigUint64Array], BOOL: ['bool', Uint8Array],
};
const KSERVE = {
  float32: 'FP32', float64: 'FP64', float16: 'FP16', int8: 'INT8', int16: 'INT16', int32: 'INT32',
  int64: 'INT64', uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64', bool: 'BOOL',
};

function toTensor(t) {
  const a = ARRAYS[t.datatype];
  if (!a) throw new Error(`input ${t.name}: datatype ${t.datatype} is not supported by golden_ort.js`);
  const [type, Ctor] = a;
  const data = Ctor === BigInt64Array || Ctor === BigUint64Array
    ? Ctor.from(t.data.map((x) => BigInt(x)))
    : Ctor.from(t.data.map((x) => (typeof x === 'boolean' ? Number(x) : x)));
  return new ort.Tensor(type, data, t.shape);
}

function fromTensor(name, t) {
  const datatype = KSERVE[t.type];
  if (!datatype || datatype === 'FP16') throw new Error(`output ${name}: type ${t.type} is not supported by golden_ort.js`);
  const data = Array.from(t.data, (x) => {
    if (typeof x === 'bigint') {
      const n = Number(x);
      if (!Number.isSafeInteger(n)) throw new Error(`output ${name}: ${x} is not a safe integer`);
      return n;
    }
    if (typeof x === 'boolean') return x ? 1 : 0;
    if (!Number.isFinite(x)) throw new Error(`output ${name}: a value is not finite (${x}); JSON cannot hold it`);
    return x;
  });
  return {name, datatype, shape: t.dims.map(Number), data};
}

function sameBytes(a, b) {
  const x = Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  const y = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  return a.dims.join(',') === b.dims.join(',') && x.equals(y);
}

async function main() {
  const [model, requestPath] = process.argv.slice(2);
  if (!model || !requestPath) throw new Error('usage: node golden_ort.js MODEL.onnx REQUEST.json');
  const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1, logSeverityLevel: 3,
  });
  const cases = [];
  for (const c of request.cases) {
    const feeds = {};
    for (const t of c.inputs) feeds[t.name] = toTensor(t);
    const first = await session.run(feeds);
    const stochastic = new Set();
    for (let r = 1; r < RUNS; r++) {
      const again = await session.run(feeds);
      for (const name of session.outputNames) {
        if (!sameBytes(first[name], again[name])) stochastic.add(name);
      }
    }
    const outputs = [];
    for (const name of session.outputNames) {
      if (!stochastic.has(name)) outputs.push(fromTensor(name, first[name]));
    }
    cases.push({name: c.name, outputs, stochastic: [...stochastic]});
  }
  process.stdout.write(JSON.stringify({generator: `onnxruntime-node ${ORT_VERSION}`, cases}) + '\n');
}

main().catch((e) => {
  process.stderr.write(`golden_ort.js: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
