// The web app's figures for BENCHMARKS.md (benches/ui.sh starts the server and runs this): live
// log latency in the page against an HTTP follower, the runs page's first render with 100,000
// runs against a handful, and a 200 MB log's first screen and scroll against a 2 MB log. Times
// are read inside the page (performance.now() from the navigation's start, a MutationObserver
// for what is rendered, PerformanceObserver for long tasks); nothing here is a test.
//
// Environment: KILN_URL, KILN_TOKEN, KILN_DB (the server's SQLite file), PARTS, LOG_MB.

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.KILN_URL;
const token = process.env.KILN_TOKEN;
const parts = (process.env.PARTS ?? "latency runs log").split(/\s+/);
const logMb = Number(process.env.LOG_MB ?? 200);
const now = () => performance.timeOrigin + performance.now();

async function api(method, path, body) {
  const r = await fetch(base + path, { method, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

/// Queues a run of one `busybox` command line; its run ID.
async function submit(cmd) {
  const task = `version: v1.1.0\nsteps:\n  - id: s\n    cmd: ${cmd}\n`;
  const run = await api("POST", "/runs", { type: "EncodedTaskRunRequest", source: { kind: "none" }, encodedTaskContent: Buffer.from(task).toString("base64") });
  return run.runId;
}

async function finished(id) {
  for (;;) {
    const run = await api("GET", `/runs/${id}?wait=60`);
    if (!["Queued", "Started", "Running"].includes(run.status)) return run;
  }
}

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
const ms = (v) => `${v.toFixed(1)} ms`;
const median = (v) => pct(v, 50);

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "kiln-bench-chromium-")), {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
// In every page: when the first run row and each log line were rendered, and long tasks.
await context.addInitScript(() => {
  window.__seen = {};
  window.__long = [];
  // The line whose rendering ends "first screen" (a hash no route reads).
  const want = /^#bench-want=(.*)$/.exec(location.hash);
  if (want) window.__want = decodeURIComponent(want[1]);
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__long.push(e.duration); }).observe({ type: "longtask", buffered: true });
  const look = () => {
    if (window.__rows === undefined && document.querySelector("table.runs tbody tr")) window.__rows = performance.now();
    for (const row of document.querySelectorAll(".log .line:not(.pending)")) {
      const text = row.textContent;
      const m = /lat (\d+\.\d+)/.exec(text);
      if (m && window.__seen[m[1]] === undefined) window.__seen[m[1]] = performance.timeOrigin + performance.now();
      if (window.__want && text.includes(window.__want) && window.__found === undefined) window.__found = performance.now();
    }
  };
  document.addEventListener("DOMContentLoaded", () => new MutationObserver(look).observe(document.body, { childList: true, subtree: true }));
});
const page = context.pages()[0] ?? await context.newPage();
await page.goto(base + "/");
await page.getByLabel("API token").fill(token);
await page.getByRole("button", { name: "Sign in" }).click();
await page.getByRole("heading", { name: "Runs" }).waitFor();

try {
  if (parts.includes("latency")) {
    const lines = 200;
    const id = await submit(`busybox sh -c 'sleep 8; i=0; while [ $i -lt ${lines} ]; do i=$((i+1)); echo "lat $EPOCHREALTIME"; usleep 20000; done'`);
    await page.goto(`${base}/ui/runs/${id}`);
    await page.locator(".log-pane").waitFor();
    const follower = [];
    const response = await fetch(`${base}/runs/${id}/log?follow=true`, { headers: { Authorization: `Bearer ${token}` } });
    const connected = now();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let rest = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const at = now();
      const parts = (rest + decoder.decode(value, { stream: true })).split("\n");
      rest = parts.pop();
      for (const line of parts) { const m = /lat (\d+\.\d+)/.exec(line); if (m) follower.push([m[1], at]); }
    }
    await finished(id);
    await page.waitForFunction((n) => Object.keys(window.__seen).length >= n, lines);
    const seen = await page.evaluate(() => window.__seen);
    // Lines written once both readers were connected, read by both.
    const pairs = follower.filter(([stamp]) => Number(stamp) * 1000 > connected && seen[stamp] !== undefined);
    const pageLat = pairs.map(([stamp]) => seen[stamp] - Number(stamp) * 1000);
    const httpLat = pairs.map(([stamp, at]) => at - Number(stamp) * 1000);
    console.log(`latency: ${pairs.length} lines; page p50 ${ms(pct(pageLat, 50))} p90 ${ms(pct(pageLat, 90))}; ` +
      `HTTP follower p50 ${ms(pct(httpLat, 50))} p90 ${ms(pct(httpLat, 90))}; ratio p50 ${(pct(pageLat, 50) / pct(httpLat, 50)).toFixed(2)}`);
  }

  if (parts.includes("runs")) {
    const firstRows = async () => {
      const times = [];
      for (let i = 0; i < 6; i++) {
        await page.goto(base + "/");
        await page.waitForFunction(() => window.__rows !== undefined);
        if (i > 0) times.push(await page.evaluate(() => window.__rows));
      }
      return times;
    };
    const few = (await api("GET", "/runs?top=100")).value.length;
    const before = await firstRows();
    const sql = `.timeout 10000
      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
      INSERT INTO runs (id, counter, status, run_type, trigger_kind, task_name, request,
         timeout_secs, platform, created_at, updated_at, output_images, cancel_requested,
         epoch, log_seq, log_len, agent_name, agent_pool, branch, trigger_detail)
      SELECT 'kbench' || i, 1000 + i, CASE i % 4 WHEN 0 THEN 'Failed' ELSE 'Succeeded' END, 'AutoRun',
         CASE i % 3 WHEN 0 THEN 'Commit' ELSE 'Manual' END, 'task' || (i % 50), '{}',
         3600, 'linux/amd64', i, i, '[]', FALSE, 0, 0, 0, 'agent' || (i % 20), NULL, NULL, NULL FROM n;
      UPDATE run_counter SET last = 101000;
      ANALYZE;`;
    execFileSync("sqlite3", [process.env.KILN_DB], { input: sql });
    const runs = (await api("GET", "/runs?top=1")).nextLink;
    if (!runs) throw new Error("the fill did not take");
    const after = await firstRows();
    console.log(`runs page first render (navigation start -> first row), median of 5: 100,000 runs ${ms(median(after))} ` +
      `[${after.map((t) => t.toFixed(0)).join(", ")}]; ${few} runs ${ms(median(before))} [${before.map((t) => t.toFixed(0)).join(", ")}]; ratio ${(median(after) / median(before)).toFixed(2)}`);
  }

  if (parts.includes("log")) {
    const open = async (mb) => {
      const count = Math.round((mb * 1e6) / 80);
      const pad = ".".repeat(80 - 16 - 1 - 4);
      const id = await submit(`busybox awk 'BEGIN { for (i = 1; i <= ${count}; i++) printf "line %09d %s\\n", i, "${pad}" }'`);
      const run = await finished(id);
      if (run.status !== "Succeeded") throw new Error(`${id}: ${run.status}`);
      let fetched = 0;
      const onRead = async (request) => { if (request.url().includes(`/runs/${id}/log`)) fetched += (await request.sizes()).responseBodySize; };
      page.on("requestfinished", onRead);
      const lastLine = `line ${String(count).padStart(9, "0")}`;
      // First screen: three opens, the median; long tasks of all three.
      const firsts = [], openLong = [];
      for (let i = 0; i < 3; i++) {
        // A fresh document each time (the same address with a hash would not load again).
        await page.goto("about:blank");
        await page.goto(`${base}/ui/runs/${id}#bench-want=${encodeURIComponent(lastLine)}`);
        await page.locator(".log .line", { hasText: lastLine }).waitFor({ timeout: 120000 });
        await page.waitForFunction(() => window.__found !== undefined);
        firsts.push(await page.evaluate(() => window.__found));
        openLong.push(...await page.evaluate(() => window.__long.splice(0)));
      }
      const first = median(firsts);
      fetched = 0;
      // Top, then down to the end in 40 steps, each step's rows loaded before the next.
      const log = page.locator(".log");
      await log.evaluate((el) => { el.scrollTop = 0; });
      await page.locator(".log .line", { hasText: "line 000000001" }).waitFor({ timeout: 120000 });
      for (let s = 1; s <= 40; s++) {
        await log.evaluate((el, f) => { el.scrollTop = f * (el.scrollHeight - el.clientHeight); }, s / 40);
        await page.waitForFunction(() => document.querySelectorAll(".log .line.pending").length === 0, undefined, { timeout: 120000 });
      }
      await page.locator(".log .line", { hasText: lastLine }).waitFor();
      const scrollLong = await page.evaluate(() => window.__long.splice(0));
      page.off("requestfinished", onRead);
      // Baseline: reading the whole log over HTTP, the least a pane that loads it all must do.
      const t0 = now();
      const whole = (await (await fetch(`${base}/runs/${id}/log`, { headers: { Authorization: `Bearer ${token}` } })).arrayBuffer()).byteLength;
      const wholeMs = now() - t0;
      if (whole !== run.logLength) throw new Error(`${id}: read ${whole} of ${run.logLength} bytes`);
      return { size: run.logLength, first, firsts, openLong, scrollLong, fetched, wholeMs };
    };
    const describe = (r) => `${(r.size / 1e6).toFixed(0)} MB log: first screen (navigation start -> last line rendered), median of 3: ${ms(r.first)} ` +
      `[${r.firsts.map((t) => t.toFixed(0)).join(", ")}]; long tasks in the 3 opens: ${r.openLong.length} (max ${ms(Math.max(0, ...r.openLong))}); scrolling top -> end in 40 steps: ` +
      `${r.scrollLong.length} long tasks (max ${ms(Math.max(0, ...r.scrollLong))}); bytes read by the page while scrolling ${(r.fetched / 1e6).toFixed(1)} MB; ` +
      `baseline, the whole log over HTTP (node fetch): ${ms(r.wholeMs)}, ratio first screen / whole ${(r.first / r.wholeMs).toFixed(3)}`;
    const small = await open(2);
    const big = await open(logMb);
    console.log(describe(big));
    console.log(describe(small));
    console.log(`ratio first screen ${(big.first / small.first).toFixed(2)}`);
  }
} finally {
  await context.close();
}
