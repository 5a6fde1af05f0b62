#!/usr/bin/env node
// The outputs of one ONNX Runtime run, for `policyctl bench engine`'s output check: the model of
// MODELS_DIR/models.json at BATCH on the seeded inputs ort_bench.js uses (xorshift32, seed
// 12345+batch, inputs in models.json order), one session with 1 intra-op thread and the
// graph optimizations ort_bench.js uses. Lives beside ort_bench.js (bench/engine/run.sh copies
// it to build/peers/), with node/node_modules/onnxruntime-node there.
//
//   node ort_outputs.js --models-dir DIR --model NAME --batch N
//
// Prints ONE JSON line: {"model":..,"batch":..,"outputs":{"NAME":{"shape":[..],"data":[..]}}}.
'use strict';
const path = require('path');
const fs = require('fs');
const ort = require(path.join(__dirname, 'node', 'node_modules', 'onnxruntime-node'));

function parseArgs(argv) {
  const a = {'models-dir': '', model: '', batch: '1'};
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in a) || i + 1 >= argv.length) throw new Error(`bad flag ${argv[i]}`);
    a[k] = argv[++i];
  }
  if (!a['models-dir'] || !a.model) throw new Error('--models-dir and --model are required');
  a.batch = parseInt(a.batch, 10);
  return a;
}

// ort_bench.js's filler, the same numbers as bench/engine's SeededInputs.
function filler(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    let acc = 0;
    for (let k = 0; k < 4; k++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      acc += s / 4294967296;
    }
    return (acc - 2) * 1.7;
  };
}

async function main() {
  const a = parseArgs(process.argv);
  const meta = JSON.parse(fs.readFileSync(path.join(a['models-dir'], 'models.json'), 'utf8'));
  const spec = meta.models[a.model];
  if (!spec) throw new Error(`unknown model ${a.model}; have ${Object.keys(meta.models)}`);
  const rnd = filler(12345 + a.batch);
  const feeds = {};
  for (const inp of spec.inputs) {
    const shape = inp.shape.map((d) => (d === -1 ? a.batch : d));
    const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
    for (let i = 0; i < data.length; i++) data[i] = rnd();
    feeds[inp.name] = new ort.Tensor('float32', data, shape);
  }
  const session = await ort.InferenceSession.create(path.join(a['models-dir'], spec.file), {
    intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', executionProviders: ['cpu'],
  });
  const res = await session.run(feeds);
  const outputs = {};
  for (const [name, t] of Object.entries(res)) {
    outputs[name] = {shape: t.dims.map(Number), data: Array.from(t.data, Number)};
  }
  await session.release();
  console.log(JSON.stringify({model: a.model, batch: a.batch, outputs}));
}

main().catch((e) => { console.error(e); process.exit(1); });
