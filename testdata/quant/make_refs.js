// ONNX Runtime references of the int8 models in this folder, in pd_refcheck's format
// (see testdata/reference/INDEX.md): onnxruntime-node, CPU execution provider, graph
// optimization "all", one intra-op thread; inputs uniform in [-1, 1) from a mulberry32
// stream seeded with `seed`, exact in float32; batch 1, 8 and 64.
//   NODE_PATH=<dir with onnxruntime-node> node testdata/quant/make_refs.js
const ort = require('onnxruntime-node');
const fs = require('fs');
const path = require('path');

function mulberry32(a) {
  return () => {
    a |= 0; a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

(async () => {
  const dir = __dirname;
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.onnx')).sort()) {
    const id = 'quant-' + file.replace(/\.onnx$/, '');
    const s = await ort.InferenceSession.create(path.join(dir, file),
      {intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all'});
    for (const batch of [1, 8, 64]) {
      const seed = 1000 + batch;
      const rnd = mulberry32(seed);
      const feeds = {}, inputs = [];
      for (const name of s.inputNames) {
        const meta = s.inputMetadata.find ? s.inputMetadata.find((m) => m.name === name) : null;
        const dims = meta && meta.shape ? meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : batch)) : [batch, 64];
        const n = dims.reduce((a, b) => a * b, 1);
        const x = new Float32Array(n);
        for (let i = 0; i < n; i++) x[i] = -1 + Math.floor(rnd() * 16777216) / 8388608;
        feeds[name] = new ort.Tensor('float32', x, dims);
        inputs.push({name, datatype: 'FP32', shape: dims, data: Array.from(x)});
      }
      const out = await s.run(feeds);
      const outputs = s.outputNames.map((name) => ({name, datatype: 'FP32', shape: out[name].dims,
        deterministic: true, data: Array.from(out[name].data)}));
      const ref = {model: 'testdata/quant/' + file, id, batch, seed,
        generator: 'onnxruntime-node ' + require('onnxruntime-node/package.json').version, inputs, outputs};
      fs.writeFileSync(path.join(dir, `${id}_b${batch}.json`), JSON.stringify(ref) + '\n');
      console.log(`${id}_b${batch}.json`);
    }
  }
})();
