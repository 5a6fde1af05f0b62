#!/usr/bin/env node
// make_refs.js: ONNX Runtime (CPU) reference outputs for the policyd test models.
//
//   cd tools/reference && npm ci --ignore-scripts && node make_refs.js
//   (the repository's `make refs` target is meant to run exactly this)
//
// For every model
//   - ../shared/models/**/*.onnx (recursively), except files whose name contains "_INVALID"
//     (negative test cases that ONNX Runtime refuses to load), id "<folder>-<basename>";
//   - ../shared/peers/models/*.onnx, id "peers-<basename>";
//   - testdata/models/**/*.onnx (the repository's own small op models, e.g. Einsum's), id
//     "testdata-<folder>-<basename>";
// it loads the model with onnxruntime-node (CPU execution provider, graphOptimizationLevel
// "all", intraOpNumThreads 1), builds seeded pseudo-random inputs, runs them at batch 1 and,
// when the model has a dynamic (symbolic) batch dimension, also at batch 8, and writes
// testdata/reference/<id>_b<batch>.json plus testdata/reference/INDEX.md.
//
// Paths are resolved from this file's location: the repository root is ../.. and the shared
// material is ../shared relative to the repository root. Paths written into the JSON files
// are relative to the repository root ("../shared/models/mlagents/3DBall.onnx").
//
// Input rules (they are also written to INDEX.md):
//   - Shapes come from session.inputMetadata (onnxruntime-common 1.30 typings:
//     TensorValueMetadata {name, isTensor, type, shape: (number|string)[]}, a string being a
//     symbolic dimension). A dimension is "symbolic" when it is a string or a negative number.
//   - The model has a dynamic batch when at least one input has rank >= 1 and a symbolic first
//     dimension. The names of those first dimensions are the "batch names".
//   - A symbolic dimension becomes the batch when it is the first dimension of its input, or
//     when its name is one of the batch names (e.g. peers/lstm's h_in [1, "batch", 128]: its
//     batch sits in dimension 1). Every other symbolic dimension becomes 3 (reported).
//   - Fixed dimensions are used as declared. A model without a dynamic batch (fixed first dim,
//     or rank-1 inputs with a fixed size) runs at batch 1 only, with shapes as declared.
//   - Values: one mulberry32 stream per (model, batch), seed = (fnv1a32(id) + batch) >>> 0,
//     consumed input by input in declared order, elements in row-major order:
//       float inputs: -1 + k * 2^-23 with k = the top 24 bits of the 32-bit draw, i.e. uniform
//                     in [-1, 1) and exactly representable in float32 (and float64);
//       inputs whose name contains "mask": all ones (no draws);
//       bool inputs: draw < 0.5; integer inputs: floor(draw * 4), i.e. 0..3.
//
// Determinism: the same feeds are run RUNS (100) times (the first run in one session, the
// repeats in a second, log-quiet session of the same model); an output whose bytes differ
// between any run and the first one is "deterministic": false (RandomNormalLike /
// Multinomial heads). So is an output that depends on a random op in the graph even when it
// happened not to change (see inspectModel). Its "data" is the first run's values; ONNX
// Runtime's random ops are unseeded, so that data changes each time the generator runs.
//
// JSON numbers: float32/float64 values are printed with JSON.stringify, i.e. the shortest
// decimal that round-trips the double, which is exactly the float32 value. int64 outputs
// (BigInt64Array in onnxruntime-node) are converted to Number after checking they are safe
// integers. Non-finite values cannot be written as JSON and stop the generator.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.join(REPO_ROOT, '..', 'shared');
const MODELS_DIR = path.join(SHARED, 'models');
const PEERS_MODELS_DIR = path.join(SHARED, 'peers', 'models');
const TESTDATA_MODELS_DIR = path.join(REPO_ROOT, 'testdata', 'models');
const OUT_DIR = path.join(REPO_ROOT, 'testdata', 'reference');

const RUNS = 100;               // runs of the same feeds used to classify outputs
const DYNAMIC_BATCHES = [1, 8]; // batches for models with a dynamic batch dimension
const OTHER_SYMBOLIC_DIM = 3;   // value of symbolic dimensions that are not the batch
const ORT_VERSION = require('onnxruntime-node/package.json').version;
const GENERATOR = `onnxruntime-node ${ORT_VERSION}`;

const SESSION_OPTIONS = {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  intraOpNumThreads: 1,
};

// onnxruntime-common tensor type -> KServe v2 datatype name.
const KSERVE_DATATYPE = {
  float32: 'FP32', float64: 'FP64', float16: 'FP16',
  int8: 'INT8', int16: 'INT16', int32: 'INT32', int64: 'INT64',
  uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64',
  bool: 'BOOL', string: 'BYTES',
};

// ---------------------------------------------------------------------------------------------
// Seeded randomness.

// mulberry32: a small 32-bit PRNG; returns a function giving uint32 draws.
function mulberry32(seed) {
  let a = seed >>> 0;
  return function nextUint32() {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

// FNV-1a 32-bit hash of a string's UTF-16 code units (ids are ASCII).
function fnv1a32(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const seedFor = (id, batch) => (fnv1a32(id) + batch) >>> 0;

// ---------------------------------------------------------------------------------------------
// Model discovery.

// All *.onnx files below dir, sorted, as absolute paths.
function findOnnx(dir, recursive) {
  const found = [];
  for (const e of fs.readdirSync(dir, {withFileTypes: true})) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && recursive) found.push(...findOnnx(p, true));
    else if (e.isFile() && e.name.endsWith('.onnx')) found.push(p);
  }
  return found.sort();
}

// [{id, file, rel}] for every model to run; rel is the path relative to the repository root.
function listModels() {
  const models = [];
  for (const file of findOnnx(MODELS_DIR, true)) {
    if (path.basename(file).includes('_INVALID')) continue; // negative test cases
    // <folder>-<basename>; a deeper nesting would join every folder with '-'.
    const relDir = path.relative(MODELS_DIR, path.dirname(file)).split(path.sep).filter(Boolean);
    const id = [...relDir, path.basename(file, '.onnx')].join('-');
    models.push({id, file});
  }
  for (const file of findOnnx(PEERS_MODELS_DIR, false)) {
    models.push({id: `peers-${path.basename(file, '.onnx')}`, file});
  }
  if (fs.existsSync(TESTDATA_MODELS_DIR)) {
    for (const file of findOnnx(TESTDATA_MODELS_DIR, true)) {
      const relDir = path.relative(TESTDATA_MODELS_DIR, path.dirname(file)).split(path.sep).filter(Boolean);
      models.push({id: ['testdata', ...relDir, path.basename(file, '.onnx')].join('-'), file});
    }
  }
  const seen = new Set();
  for (const m of models) {
    if (seen.has(m.id)) throw new Error(`duplicate model id ${m.id}`);
    seen.add(m.id);
    m.rel = path.relative(REPO_ROOT, m.file).split(path.sep).join('/');
  }
  return models;
}

// ---------------------------------------------------------------------------------------------
// Static check for sampling: which graph outputs depend on a random op.
//
// Observing 100 runs is not enough on its own: a Multinomial head whose distribution is very
// peaked (mlagents/Basic at batch 1 picks the same action in ~99.4% of draws) may not change in
// 100 runs, and ONNX Runtime's random ops are unseeded (onnxruntime-node has no seed API), so
// the observed classification would differ from one generator run to the next. The model file
// is therefore also read (a minimal protobuf walk of ModelProto.graph; nothing else is needed)
// and an output that depends on a random op is marked "deterministic": false as well.

// Ops whose output is sampled anew on every run.
const RANDOM_OPS = new Set(['RandomNormal', 'RandomNormalLike', 'RandomUniform',
                            'RandomUniformLike', 'Multinomial', 'Bernoulli']);
// Ops whose output depends only on the input's shape, not its values: they stop the taint.
const SHAPE_ONLY_OPS = new Set(['Shape', 'Size']);

// Reads a base-128 varint at p; returns [value, next p]. Values above 2^53 lose precision,
// which does not matter: they are only skipped.
function readVarint(buf, p) {
  let v = 0;
  let mul = 1;
  let b;
  do {
    if (p >= buf.length) throw new Error('truncated protobuf varint');
    b = buf[p++];
    v += (b & 0x7f) * mul;
    mul *= 128;
  } while (b & 0x80);
  return [v, p];
}

// Walks the fields of the message in buf[start, end): calls onBytes(field, s, e) for each
// length-delimited field (its payload is buf[s, e)) and onVarint(field, value) for each varint;
// fixed-width fields are skipped.
function forEachField(buf, start, end, onBytes, onVarint) {
  let p = start;
  while (p < end) {
    let key;
    [key, p] = readVarint(buf, p);
    const field = Math.floor(key / 8);
    switch (key & 7) {
      case 0: {
        let v;
        [v, p] = readVarint(buf, p);
        if (onVarint) onVarint(field, v);
        break;
      }
      case 1: p += 8; break;
      case 5: p += 4; break;
      case 2: {
        let len;
        [len, p] = readVarint(buf, p);
        if (onBytes) onBytes(field, p, p + len);
        p += len;
        break;
      }
      default: throw new Error(`unsupported protobuf wire type ${key & 7}`);
    }
  }
}
const forEachBytesField = (buf, start, end, fn) => forEachField(buf, start, end, fn, null);

// ValueInfoProto -> {name, shape}; shape holds numbers (dim_value) and strings (dim_param,
// '' when neither is set), or is null when the value has no tensor shape.
function parseValueInfo(buf, start, end) {
  const info = {name: '', shape: null};
  forEachBytesField(buf, start, end, (f, s, e) => {
    if (f === 1) info.name = buf.toString('utf8', s, e);
    if (f !== 2) return; // TypeProto
    forEachBytesField(buf, s, e, (tf, ts, te) => {
      if (tf !== 1) return; // TypeProto.tensor_type
      forEachBytesField(buf, ts, te, (sf, ss, se) => {
        if (sf !== 2) return; // Tensor.shape
        info.shape = [];
        forEachBytesField(buf, ss, se, (df, ds, de) => {
          if (df !== 1) return; // TensorShapeProto.dim
          let dim = '';
          forEachField(buf, ds, de, (xf, xs, xe) => {
            if (xf === 2) dim = buf.toString('utf8', xs, xe); // dim_param
          }, (xf, v) => {
            if (xf === 1) dim = v; // dim_value
          });
          info.shape.push(dim);
        });
      });
    });
  });
  return info;
}

// NodeProto -> {op, inputs, outputs, subgraphs: [[start, end]]}.
function parseNode(buf, start, end) {
  const node = {op: '', inputs: [], outputs: [], subgraphs: []};
  forEachBytesField(buf, start, end, (f, s, e) => {
    if (f === 1) node.inputs.push(buf.toString('utf8', s, e));
    else if (f === 2) node.outputs.push(buf.toString('utf8', s, e));
    else if (f === 4) node.op = buf.toString('utf8', s, e);
    else if (f === 5) { // AttributeProto: g = 6, graphs = 11
      forEachBytesField(buf, s, e, (af, as, ae) => {
        if (af === 6 || af === 11) node.subgraphs.push([as, ae]);
      });
    }
  });
  return node;
}

// Nodes of the GraphProto in buf[start, end) (GraphProto.node = field 1).
function graphNodes(buf, start, end) {
  const nodes = [];
  forEachBytesField(buf, start, end, (f, s, e) => {
    if (f === 1) nodes.push(parseNode(buf, s, e));
  });
  return nodes;
}

// True when the graph, or any subgraph of its nodes (If/Loop/Scan bodies), has a random op.
function graphHasRandomOp(buf, start, end) {
  return graphNodes(buf, start, end).some((n) => RANDOM_OPS.has(n.op) ||
    n.subgraphs.some(([s, e]) => graphHasRandomOp(buf, s, e)));
}

// Reads the main graph of an ONNX file. Returns
//   taint: Map value name -> the random op it depends on. A node's outputs are tainted when it
//          is a random op, holds a subgraph with one, or (unless it only reads shapes) has a
//          tainted input; iterated to a fixed point, so node order is irrelevant.
//   declaredOutputs: Map output name -> shape as written in the file (GraphProto.output = 12).
//          onnxruntime's outputMetadata may already show a shape merged with its own inference
//          (mlagents/VisualFoodCollector), so declared-vs-returned notes use the file's shapes.
function inspectModel(file) {
  const buf = fs.readFileSync(file);
  let graph = null;
  forEachBytesField(buf, 0, buf.length, (f, s, e) => { if (f === 7) graph = [s, e]; });
  if (!graph) throw new Error(`${file}: no graph in ModelProto`);
  const declaredOutputs = new Map();
  forEachBytesField(buf, graph[0], graph[1], (f, s, e) => {
    if (f !== 12) return;
    const info = parseValueInfo(buf, s, e);
    if (!declaredOutputs.has(info.name)) declaredOutputs.set(info.name, info.shape);
  });
  const nodes = graphNodes(buf, graph[0], graph[1]);
  const taint = new Map();
  for (let changed = true; changed;) {
    changed = false;
    for (const n of nodes) {
      let src = null;
      if (RANDOM_OPS.has(n.op)) src = n.op;
      else if (n.subgraphs.some(([s, e]) => graphHasRandomOp(buf, s, e))) src = `${n.op} body`;
      else if (!SHAPE_ONLY_OPS.has(n.op)) {
        const t = n.inputs.find((i) => taint.has(i));
        if (t !== undefined) src = taint.get(t);
      }
      if (src === null) continue;
      for (const o of n.outputs) {
        if (o !== '' && !taint.has(o)) {
          taint.set(o, src);
          changed = true;
        }
      }
    }
  }
  return {taint, declaredOutputs};
}

// ---------------------------------------------------------------------------------------------
// Shapes and inputs.

const isSymbolic = (d) => typeof d === 'string' || d < 0;
const fmtDim = (d) => (typeof d === 'string' ? (d === '' ? '?' : d) : String(d));
const fmtShape = (s) => `[${s.map(fmtDim).join(', ')}]`;

// Looks at the declared input shapes: is there a dynamic batch, and under which names?
function batchInfo(inputMeta) {
  const names = new Set();
  let dynamic = false;
  for (const m of inputMeta) {
    if (m.shape.length >= 1 && isSymbolic(m.shape[0])) {
      dynamic = true;
      if (typeof m.shape[0] === 'string' && m.shape[0] !== '') names.add(m.shape[0]);
    }
  }
  return {dynamic, names};
}

// Concrete shape of one input at `batch`; notes lists symbolic dims that were set to 3.
function concreteShape(meta, batch, batchNames, notes) {
  return meta.shape.map((d, i) => {
    if (!isSymbolic(d)) return d;
    if (i === 0 || (typeof d === 'string' && batchNames.has(d))) return batch;
    notes.push(`${meta.name} dim ${i} (${fmtDim(d)}) = ${OTHER_SYMBOLIC_DIM}`);
    return OTHER_SYMBOLIC_DIM;
  });
}

// Builds one input's values. Returns {tensor, data}, data being the plain JS values for JSON.
function makeInput(meta, shape, next) {
  const n = shape.reduce((a, b) => a * b, 1);
  const mask = meta.name.includes('mask');
  const data = new Array(n);
  switch (meta.type) {
    case 'float32':
    case 'float64': {
      // Top 24 bits -> k in [0, 2^24); -1 + k/2^23 is exact in float32 and lies in [-1, 1).
      for (let i = 0; i < n; i++) data[i] = mask ? 1 : -1 + (next() >>> 8) / 8388608;
      const arr = meta.type === 'float32' ? Float32Array.from(data) : Float64Array.from(data);
      return {tensor: new ort.Tensor(meta.type, arr, shape), data};
    }
    case 'bool': {
      for (let i = 0; i < n; i++) data[i] = mask ? true : next() / 4294967296 < 0.5;
      return {tensor: new ort.Tensor('bool', Uint8Array.from(data, (b) => (b ? 1 : 0)), shape), data};
    }
    case 'int8': case 'int16': case 'int32': case 'int64':
    case 'uint8': case 'uint16': case 'uint32': case 'uint64': {
      for (let i = 0; i < n; i++) data[i] = mask ? 1 : Math.floor((next() / 4294967296) * 4);
      const Ctor = {
        int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
        uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
      }[meta.type];
      const arr = meta.type.endsWith('64') ? Ctor.from(data, (v) => BigInt(v)) : Ctor.from(data);
      return {tensor: new ort.Tensor(meta.type, arr, shape), data};
    }
    default:
      throw new Error(`input ${meta.name}: unsupported type ${meta.type}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs.

// Plain JS values of an output tensor, checked to be representable in JSON.
function tensorValues(name, t) {
  const d = t.data;
  if (t.type === 'bool') return Array.from(d, (v) => v !== 0);
  if (d instanceof BigInt64Array || d instanceof BigUint64Array) {
    return Array.from(d, (v) => {
      const x = Number(v);
      if (!Number.isSafeInteger(x)) throw new Error(`output ${name}: ${v} is not a safe integer`);
      return x;
    });
  }
  if (t.type === 'float16') throw new Error(`output ${name}: float16 is not supported here`);
  if (t.type === 'string') throw new Error(`output ${name}: string outputs are not supported`);
  const out = Array.from(d);
  for (const v of out) {
    if (!Number.isFinite(v)) throw new Error(`output ${name}: non-finite value ${v}`);
  }
  return out;
}

// Byte view of a tensor's data, for exact run-to-run comparison (NaN-safe, -0 aware).
const bytesOf = (t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

// True when `actual` does not fit the declared output shape (rank or a fixed dimension).
function shapeDiffers(declared, actual) {
  if (declared.length !== actual.length) return true;
  return declared.some((d, i) => !isSymbolic(d) && d !== actual[i]);
}

// ---------------------------------------------------------------------------------------------
// One model at one batch.

// session: the session whose first run is recorded (default log level, so ONNX Runtime's
// warnings are printed once); quiet: a second session of the same model with log level
// "error" for the RUNS - 1 repeat runs (onnxruntime-node prints some warnings, e.g. a returned
// shape that differs from the declared one, through the session logger on every run, and
// RunOptions.logSeverityLevel does not silence them). Both use the same options, so a
// deterministic output is bit-identical across them.
async function runOne(model, session, quiet, batch, dynamic, batchNames, graphInfo) {
  const {taint, declaredOutputs} = graphInfo;
  const seed = seedFor(model.id, batch);
  const next = mulberry32(seed);
  const notes = [];        // stable facts: go to INDEX.md and the console
  const consoleNotes = []; // depend on the random draws of this run: console only

  const feeds = {};
  const inputs = [];
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
    const shape = concreteShape(meta, batch, batchNames, notes);
    const {tensor, data} = makeInput(meta, shape, next);
    feeds[meta.name] = tensor;
    inputs.push({name: meta.name, datatype: KSERVE_DATATYPE[meta.type], shape, data});
  }

  // Declared output order, each name once (a name listed twice by a model appears once).
  const outputMeta = [];
  const seen = new Set();
  for (const meta of session.outputMetadata) {
    if (seen.has(meta.name)) {
      notes.push(`output ${meta.name} listed twice; kept once`);
      continue;
    }
    seen.add(meta.name);
    outputMeta.push(meta);
  }

  const first = await session.run(feeds);
  const firstBytes = {};
  const changed = {};
  for (const m of outputMeta) {
    firstBytes[m.name] = Buffer.from(bytesOf(first[m.name])); // copy
    changed[m.name] = false;
  }
  for (let r = 1; r < RUNS; r++) {
    const res = await quiet.run(feeds);
    for (const m of outputMeta) {
      if (!changed[m.name] && !firstBytes[m.name].equals(bytesOf(res[m.name]))) {
        changed[m.name] = true;
      }
    }
  }
  // Deterministic = unchanged over RUNS runs and no random op upstream in the graph.
  const deterministic = {};
  for (const m of outputMeta) {
    const src = taint.get(m.name);
    deterministic[m.name] = !changed[m.name] && src === undefined;
    if (src !== undefined && !changed[m.name]) {
      consoleNotes.push(`${m.name}: sampled (${src} upstream) but unchanged in ${RUNS} runs`);
    } else if (src === undefined && changed[m.name]) {
      notes.push(`${m.name}: changed across runs although no random op is upstream`);
    }
  }

  const outputs = outputMeta.map((m) => {
    const t = first[m.name];
    const shape = t.dims.map(Number);
    // null: the file declares no shape for this output, so there is nothing to compare.
    const declared = declaredOutputs.has(m.name) ? declaredOutputs.get(m.name) : m.shape;
    if (declared !== null && shapeDiffers(declared, shape)) {
      notes.push(`${m.name} declared ${fmtShape(declared)}, ORT returned ${fmtShape(shape)}`);
    }
    const datatype = KSERVE_DATATYPE[t.type];
    if (!datatype) throw new Error(`output ${m.name}: unsupported type ${t.type}`);
    return {name: m.name, datatype, shape, deterministic: deterministic[m.name],
            data: tensorValues(m.name, t)};
  });

  return {
    doc: {model: model.rel, id: model.id, batch, seed, generator: GENERATOR, inputs, outputs},
    notes,
    consoleNotes,
    dynamic,
  };
}

// JSON text of one reference file: a header line, then one line per tensor.
function formatDoc(doc) {
  const head = {model: doc.model, id: doc.id, batch: doc.batch, seed: doc.seed,
                generator: doc.generator};
  const lines = [JSON.stringify(head).slice(0, -1) + ','];
  lines.push('"inputs": [');
  lines.push(doc.inputs.map((t) => JSON.stringify(t)).join(',\n'));
  lines.push('],');
  lines.push('"outputs": [');
  lines.push(doc.outputs.map((t) => JSON.stringify(t)).join(',\n'));
  lines.push(']}');
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// INDEX.md

function formatIndex(rows) {
  const tensors = (list) => list.map((t) => `\`${t.name}\` ${t.datatype}${fmtShape(t.shape)}`)
    .join('<br>');
  const out = [];
  out.push('# Reference outputs (ONNX Runtime, CPU)');
  out.push('');
  out.push(`Generated by \`tools/reference/make_refs.js\` with ${GENERATOR} (CPU execution provider,`);
  out.push('graphOptimizationLevel "all", intraOpNumThreads 1). Regenerate with `make refs`, i.e.');
  out.push('`cd tools/reference && npm ci --ignore-scripts && node make_refs.js`. On the same');
  out.push('ONNX Runtime build everything is reproduced byte for byte except the `data` of');
  out.push('stochastic outputs: ONNX Runtime\'s random ops are unseeded (onnxruntime-node has no seed');
  out.push('API), so those values differ on every regeneration and must never be compared exactly.');
  out.push('');
  out.push('Each `<id>_b<batch>.json` holds `model` (path relative to the repository root), `id`,');
  out.push('`batch`, `seed`, `generator`, `inputs` and `outputs`, each tensor as `{name, datatype');
  out.push('(KServe v2), shape, data (flat, row-major)}`; outputs also carry `deterministic`. Output');
  out.push('`shape` is what ONNX Runtime returned. Outputs appear once each, in the model\'s order.');
  out.push('');
  out.push('Models: every `../shared/models/**/*.onnx` except names containing `_INVALID` (ONNX');
  out.push('Runtime refuses to load those), id `<folder>-<name>`; every `../shared/peers/models/*.onnx`,');
  out.push('id `peers-<name>`; every `testdata/models/**/*.onnx` (the repository\'s own op models),');
  out.push('id `testdata-<folder>-<name>`.');
  out.push('');
  out.push('Inputs:');
  out.push('- One mulberry32 stream per file, seed = (FNV-1a-32(id) + batch) mod 2^32, drawn input by');
  out.push('  input in declared order, elements row-major.');
  out.push('- Float inputs: `-1 + k/2^23`, k = top 24 bits of a draw: uniform in [-1, 1) and exact in');
  out.push('  float32. Inputs whose name contains `mask`: all ones. Bool: draw < 0.5. Integers: 0..3.');
  out.push('- Shapes from `session.inputMetadata`. A model has a dynamic batch when some input has a');
  out.push('  symbolic first dimension; it then runs at batch 1 and 8, otherwise at batch 1 only with');
  out.push('  shapes as declared. A symbolic dimension is the batch when it is an input\'s first');
  out.push('  dimension or carries the same name as one (peers-lstm `h_in`/`c_in` are `[1, batch, 128]`);');
  out.push(`  any other symbolic dimension is ${OTHER_SYMBOLIC_DIM} (listed under notes).`);
  out.push('');
  out.push(`Outputs: the same inputs are run ${RUNS} times. An output is \`deterministic: false\` when`);
  out.push('it changed between runs, or when the model graph has a random op upstream of it');
  out.push(`(${[...RANDOM_OPS].join(', ')}),`);
  out.push(`even if it happened not to change in ${RUNS} runs (a peaked Multinomial can repeat:`);
  out.push('mlagents/Basic at batch 1 picks the same action in ~99% of draws). Its `data` is the');
  out.push('first run\'s. Values are the exact float32 values printed as shortest round-trip');
  out.push('doubles; int64 values are plain JSON integers. Nothing is rounded.');
  out.push('');
  out.push('| file | model | batch | inputs | outputs | stochastic | notes |');
  out.push('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const stoch = r.doc.outputs.filter((o) => !o.deterministic).map((o) => `\`${o.name}\``);
    const notes = [...(r.dynamic ? [] : ['no dynamic batch: batch 1 only']), ...r.notes];
    out.push(`| \`${r.file}\` | \`${r.doc.model}\` | ${r.doc.batch} | ${tensors(r.doc.inputs)} | ` +
             `${tensors(r.doc.outputs)} | ${stoch.join(', ') || '—'} | ${notes.join('; ') || '—'} |`);
  }
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const models = listModels();
  fs.mkdirSync(OUT_DIR, {recursive: true});
  // Remove earlier output so that a model that disappeared leaves no stale reference behind.
  for (const f of fs.readdirSync(OUT_DIR)) {
    if (/_b\d+\.json$/.test(f) || f === 'INDEX.md') fs.unlinkSync(path.join(OUT_DIR, f));
  }

  const rows = [];
  let bytes = 0;
  for (const model of models) {
    const session = await ort.InferenceSession.create(model.file, SESSION_OPTIONS);
    const quiet = await ort.InferenceSession.create(model.file,
                                                    {...SESSION_OPTIONS, logSeverityLevel: 3});
    try {
      const {dynamic, names} = batchInfo(session.inputMetadata);
      const graphInfo = inspectModel(model.file);
      for (const batch of dynamic ? DYNAMIC_BATCHES : [1]) {
        const r = await runOne(model, session, quiet, batch, dynamic, names, graphInfo);
        const file = `${model.id}_b${batch}.json`;
        const text = formatDoc(r.doc);
        fs.writeFileSync(path.join(OUT_DIR, file), text);
        bytes += Buffer.byteLength(text);
        rows.push({file, ...r});
        const outs = r.doc.outputs.map((o) => `${o.name}${fmtShape(o.shape)}`).join(' ');
        const stoch = r.doc.outputs.filter((o) => !o.deterministic).map((o) => o.name);
        const notes = [...r.notes, ...r.consoleNotes];
        console.log(`${model.id} b${batch}: ${outs}; stochastic: ${stoch.join(',') || 'none'}` +
                    (notes.length ? `; notes: ${notes.join('; ')}` : ''));
      }
    } finally {
      await session.release();
      await quiet.release();
    }
  }

  const index = formatIndex(rows);
  fs.writeFileSync(path.join(OUT_DIR, 'INDEX.md'), index);
  bytes += Buffer.byteLength(index);
  console.log(`wrote ${rows.length} reference files + INDEX.md to ` +
              `${path.relative(process.cwd(), OUT_DIR) || '.'} (${(bytes / 1048576).toFixed(2)} MiB)`);
}

main().catch((err) => {
  console.error(`make_refs: ${err.stack || err}`);
  process.exit(1);
});
