// Drive dicom-microscopy-viewer (tests/viewer/dmv/) in headless Debian chromium
// (playwright-core, executablePath) and record what it shows of each slide case: the slide
// alone, each SEG segment alone, the SR's regions; the viewer's own lists of segments and
// ROIs; and where given slide positions land in the viewport.
//
//   node tests/viewer/microscopy_check.cjs '<json spec>'
//
// spec: {url, out, timeout_ms, node_modules, chromium,
//        cases: [{name, study, slide_series, seg_series, sr_series,
//                 matrix_points: [[col, row], ...], slide_points: [[x_mm, y_mm], ...]}]}
// Writes <out>/microscopy.json (asserted by test_microscopy.py) and PNGs under <out>.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const spec = JSON.parse(process.argv[2]);
const { chromium } = require(path.join(spec.node_modules, 'playwright-core'));
const T = spec.timeout_ms || 120000;
const out = spec.out;
fs.mkdirSync(out, { recursive: true });
const result = { cases: {}, console: [], page_errors: [], http_errors: [] };
const t0 = Date.now();
function step(name, extra) {
  console.log(`[microscopy_check] ${((Date.now() - t0) / 1000).toFixed(1)} s  ${name}${extra ? ' ' + JSON.stringify(extra) : ''}`);
}

const ARGS = [
  '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
];

// Screenshot of the viewport once it has settled: no tile frame the viewer asked for is
// still loading, and two consecutive screenshots a second apart are identical (frames are
// decoded and drawn asynchronously; SwiftShader is slow); or the timeout has passed
// (recorded in `unsettled`: the test then reports it).
async function shot(page, c, name) {
  const file = path.join(out, `${c.name}_${name}.png`);
  const vp = page.locator('#viewport');
  const end = Date.now() + T;
  const pending = () => page.evaluate(() => {
    const f = window.dmvCheck.state.frames;
    return f.started - f.ended;
  });
  let prev = await vp.screenshot({ timeout: T });
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    const cur = await vp.screenshot({ timeout: T });
    const busy = (await pending()) > 0;
    if ((!busy && cur.equals(prev)) || Date.now() > end) {
      fs.writeFileSync(file, cur);
      if (!cur.equals(prev)) c.unsettled.push(name);
      break;
    }
    prev = cur;
  }
  c.shots[name] = file;
  return file;
}

async function runCase(page, spec1) {
  const c = { name: spec1.name, shots: {}, unsettled: [] };
  result.cases[spec1.name] = c;
  await page.goto(`${spec.url}/index.html`, { waitUntil: 'load', timeout: T });
  await page.waitForFunction(() => window.dmvCheck !== undefined, null, { timeout: T });
  const call = (fn, arg) => page.evaluate(([f, a]) => window.dmvCheck[f](a), [fn, arg]);
  c.slide = await call('openSlide', spec1);
  step(`${spec1.name}: slide open`, c.slide);
  await shot(page, c, 'slide');
  c.segments = await call('addSeg', spec1);
  step(`${spec1.name}: segments`, c.segments.map((s) => s.label));
  for (const s of c.segments) {
    await call('show', { segment: s.uid });
    await shot(page, c, `segment${s.number}`);
  }
  c.rois = await call('addSr', spec1);
  step(`${spec1.name}: ROIs`, c.rois.map((r) => r.label));
  await call('show', { rois: true });
  await shot(page, c, 'sr');
  await call('show', {});
  await shot(page, c, 'slide_again');
  c.matrix_pixels = await call('pixelsFromMatrix', spec1.matrix_points || []);
  c.slide_pixels = await call('pixelsFromSlide', spec1.slide_points || []);
  c.viewer_errors = await page.evaluate(() => window.dmvCheck.state.errors);
  c.slim_rejects = await page.evaluate(() => window.dmvCheck.state.slimRejects || []);
  c.frames = await page.evaluate(() => window.dmvCheck.state.frames);
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dicomnode-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: spec.chromium || '/usr/bin/chromium', headless: true, args: ARGS,
    viewport: { width: 1000, height: 1000 },
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(T);
  page.on('console', (m) => result.console.push({ type: m.type(), text: m.text().slice(0, 1000) }));
  page.on('pageerror', (e) => result.page_errors.push(String(e && e.stack ? e.stack : e).slice(0, 2000)));
  page.on('response', (r) => { if (r.status() >= 400) result.http_errors.push(`${r.status()} ${r.url()}`); });
  let ok = true;
  for (const c of spec.cases) {
    try {
      await runCase(page, c);
    } catch (e) {
      ok = false;
      result.cases[c.name] = { ...(result.cases[c.name] || {}), error: String(e && e.stack ? e.stack : e).slice(0, 3000) };
      step(`${c.name}: FAILED`, { error: String(e).slice(0, 300) });
    }
  }
  result.ok = ok;
  result.total_s = (Date.now() - t0) / 1000;
  fs.writeFileSync(path.join(out, 'microscopy.json'), JSON.stringify(result, null, 1));
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
})();
