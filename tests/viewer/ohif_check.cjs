// Drive OHIF 3.13.2 in headless Debian chromium (playwright-core, executablePath) and
// record what it shows: screenshots, the viewport pixels, the DOM texts, the console.
//
//   node tests/viewer/ohif_check.cjs '<json spec>'
//
// spec: {url, study, seg_series, sr_series, segments: [segment label, ...], out, timeout_ms,
//        node_modules, chromium}
// Writes <out>/result.json (read and asserted by test_ohif.py) and PNGs under <out>.
// Exits non-zero only when the browser could not be driven at all (a selector never
// appeared): the overlay assertions themselves are made by the Python test.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const spec = JSON.parse(process.argv[2]);
const { chromium } = require(path.join(spec.node_modules, 'playwright-core'));
const T = spec.timeout_ms || 120000;
const out = spec.out;
fs.mkdirSync(out, { recursive: true });

const result = { steps: [], console: [], page_errors: [], http_errors: [], shots: {}, texts: {} };
const t0 = Date.now();
function step(name, extra) {
  const s = { name, t_s: (Date.now() - t0) / 1000, ...(extra || {}) };
  result.steps.push(s);
  console.log(`[ohif_check] ${s.t_s.toFixed(1)} s  ${name}${extra ? ' ' + JSON.stringify(extra) : ''}`);
}
function save() {
  result.total_s = (Date.now() - t0) / 1000;
  fs.writeFileSync(path.join(out, 'result.json'), JSON.stringify(result, null, 1));
}

// Flags from .library/env/machines/python.md; WebGL through SwiftShader (DICOM-OUTPUTS §4.1).
const ARGS = [
  '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
];

async function viewportShot(page, name, timeout) {
  // the active cornerstone viewport element (image + overlays + SVG annotations), taken once
  // rendering has settled: two consecutive screenshots identical (SwiftShader is slow)
  const vp = page.locator('.cornerstone-viewport-element').first();
  const file = path.join(out, `${name}.png`);
  const end = Date.now() + (timeout || 60000);
  let prev = await vp.screenshot({ animations: 'disabled', timeout: timeout || T });
  for (;;) {
    await new Promise((r) => setTimeout(r, 700));
    const cur = await vp.screenshot({ animations: 'disabled', timeout: timeout || T });
    if (cur.equals(prev) || Date.now() > end) { fs.writeFileSync(file, cur); break; }
    prev = cur;
  }
  result.shots[name] = file;
  return file;
}

const CRASH = /Cannot read properties of|is not a function|Something went wrong|Unsupported displaySet/;
function crashed() {
  return result.page_errors.length > 0 || result.console.some((m) => CRASH.test(m.text));
}

async function fullShot(page, name) {
  const file = path.join(out, `${name}.png`);
  await page.screenshot({ path: file });
  result.shots[name] = file;
}

async function dismiss(page, text) {
  // The tour ("Skip all") and the investigational-use notice ("Confirm and hide") come up
  // a while after load; click each if it shows within a short wait.
  const loc = page.getByText(text, { exact: true }).first();
  try {
    await loc.waitFor({ state: 'visible', timeout: 20000 });
    await loc.click();
    step(`clicked "${text}"`);
  } catch (e) {
    step(`no "${text}"`);
  }
}

async function texts(page) {
  return page.evaluate(() => ({
    svg: Array.from(document.querySelectorAll('svg text')).map((t) => t.textContent.trim()).filter(Boolean),
    // the lines of each SVG text box (its <tspan>s), so that lines are not run together
    svg_lines: Array.from(document.querySelectorAll('svg text')).map((t) => {
      const spans = Array.from(t.querySelectorAll('tspan')).map((s) => s.textContent.trim()).filter(Boolean);
      return spans.length ? spans : [t.textContent.trim()];
    }),
    body: document.body.innerText,
  }));
}

// Wait until `pred()` is truthy, polling (OHIF renders asynchronously; there is no DOM event
// for "the labelmap was drawn").
async function until(pred, timeout, what) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await pred();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}`);
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dicomnode-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: spec.chromium || '/usr/bin/chromium', headless: true, args: ARGS,
    viewport: { width: 1600, height: 900 },
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(T);
  page.on('console', (m) => result.console.push({ type: m.type(), text: m.text().slice(0, 2000) }));
  page.on('pageerror', (e) => result.page_errors.push(String(e && e.stack ? e.stack : e).slice(0, 2000)));
  page.on('response', (r) => { if (r.status() >= 400) result.http_errors.push(`${r.status()} ${r.url()}`); });
  try {
    const url = `${spec.url}/viewer?StudyInstanceUIDs=${spec.study}`;
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: T });
    step('page loaded', { url });
    // the study panel lists our derived series once QIDO answered
    await page.getByText(spec.seg_series, { exact: false }).first().waitFor({ state: 'visible' });
    step('study panel lists the SEG');
    await page.locator('.cornerstone-viewport-element canvas').first().waitFor({ state: 'visible' });
    step('viewport canvas');
    await dismiss(page, 'Skip all');
    await dismiss(page, 'Confirm and hide');
    // wait for the MR image itself: the viewport is no longer uniformly black
    await until(async () => {
      const buf = await page.locator('.cornerstone-viewport-element').first().screenshot();
      return buf.length > 20000;  // a black viewport compresses to a few kB
    }, T, 'the MR image in the viewport');
    await viewportShot(page, '1_mr_viewport');
    await fullShot(page, '1_mr');
    step('MR shown');

    // ---- SEG: double-click in the study panel, accept the load prompt if there is one
    await page.getByText(spec.seg_series, { exact: false }).first().dblclick();
    step('double-clicked SEG');
    // OHIF previews the SEG on its referenced series and asks "Do you want to open this
    // Segmentation?" (No / Yes); "Yes" hydrates it into the viewport and the segment panel.
    const yes = page.getByRole('button', { name: 'Yes', exact: true }).first();
    await yes.waitFor({ state: 'visible' });
    await fullShot(page, '2_seg_prompt');
    await yes.click();
    step('clicked "Yes" (load segmentation)');
    // hydrated: the viewport's "LOAD" pill is gone
    await page.getByRole('button', { name: 'Yes', exact: true }).first().waitFor({ state: 'detached' });
    // the segmentation panel (right side, collapsed on a 1600 px page) lists our segments
    const firstRow = page.locator('[data-cy="data-row-title"]', { hasText: spec.segments[0] }).first();
    if (!(await firstRow.isVisible())) {
      await page.locator('[data-cy^="panelSegmentation"][data-cy$="-btn"]').first().click();
      step('opened the segmentation panel');
    }
    await firstRow.waitFor({ state: 'visible' });
    step('segment panel lists the segments');
    result.texts.after_seg = await texts(page);
    await viewportShot(page, '2_seg_viewport');
    await fullShot(page, '2_seg');
    // each node segment: click it in the panel (OHIF jumps to the segment's centre)
    result.node_shots = [];
    for (const [i, label] of (spec.node_segments || []).entries()) {
      const row = page.locator('[data-cy="data-row-title"]', { hasText: label }).first();
      try {
        await row.click({ timeout: 20000 });
        await page.mouse.move(5, 450);  // away from the row: its hover card covers the viewport
        await page.getByText('Compute Largest Bidirectional').first().waitFor({ state: 'hidden', timeout: 20000 })
          .catch(() => step('segment hover card still shown'));
        const file = await viewportShot(page, `3_node${i + 1}_viewport`);
        result.node_shots.push({ label, file });
        step('node segment clicked', { label });
      } catch (e) {
        result.node_shots.push({ label, error: String(e).slice(0, 500) });
        step('node segment click failed', { label });
      }
    }
    await fullShot(page, '3_nodes');

    // ---- SR: double-click in the study panel; OHIF draws its planar groups
    await page.getByText(spec.sr_series, { exact: false }).first().dblclick();
    step('double-clicked SR');
    try {
      await until(async () => {
        const t = await texts(page);
        return t.svg.some((s) => /axis/i.test(s)) || crashed();
      }, T, 'SR measurement labels in the viewport');
    } catch (e) {
      step('no SR labels', { error: String(e) });
    }
    result.texts.after_sr = await texts(page);
    await fullShot(page, '4_sr');
    result.sr_crashed = crashed();
    if (!result.sr_crashed) await viewportShot(page, '4_sr_viewport');
    step('SR done');
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
    step('FAILED', { error: String(e).slice(0, 300) });
    try { await fullShot(page, '9_failure'); } catch (e2) { /* page gone */ }
    try { result.texts.at_failure = await texts(page); } catch (e2) { /* page gone */ }
  } finally {
    save();
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.exit(result.ok ? 0 : 1);
})();
