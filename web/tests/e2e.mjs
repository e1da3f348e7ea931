// End-to-end test of the web app in a real browser (Debian's Chromium through playwright-core)
// against a real `kiln serve` that tests/ui.rs started and filled. Every step waits for what the
// page shows (Playwright's auto-waiting locators), never for a time. Prints one JSON line:
// {"ok": true, ...} or {"ok": false, "error": ...}; tests/ui.rs asserts on it.
//
// Environment: KILN_URL, KILN_TOKEN, DONE (a finished run with colours and markup in its log),
// LONG (a running run printing a line a second), TASK (a task name), SHOTS (screenshot dir),
// BIG (a finished run whose log is 80,000 numbered lines, a few MB).

import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const base = env("KILN_URL");
const shots = env("SHOTS");
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const report = { ok: false, steps: [], consoleErrors: [], axe: {} };

function check(cond, what) { if (!cond) throw new Error(`failed: ${what}`); report.steps.push(what); }

async function axe(page, name) {
  // Evaluated over the DevTools protocol, which the page's CSP does not govern (a script tag
  // would be refused by it, as it should be).
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  report.axe[name] = bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

const userData = mkdtempSync(join(tmpdir(), "kiln-ui-chromium-"));
// A fresh profile (Playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(userData, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") report.consoleErrors.push(`${page.url()}: ${m.text()}`); });
  page.on("pageerror", (e) => report.consoleErrors.push(`${page.url()}: ${e.message}`));

  // Sign in.
  await page.goto(base + "/");
  await page.getByLabel("API token").fill(env("KILN_TOKEN"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Runs" }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "kiln_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "signed in: HttpOnly SameSite=Strict session cookie");
  check(await page.evaluate(() => document.cookie === ""), "no script-readable cookie");
  await page.getByRole("link", { name: env("DONE"), exact: true }).waitFor();
  await page.screenshot({ path: `${shots}/ui-runs.png` });

  // Live runs (issue 15): a run queued after the page opened appears without a reload and turns
  // Succeeded in place; its page lists its steps with their statuses and dependencies.
  await page.locator("table.runs[data-live]").waitFor();
  await page.evaluate(() => { window.kilnSamePage = true; });
  const twoSteps = "version: v1.1.0\nsteps:\n  - id: first\n    cmd: busybox echo live-one\n" +
    "  - id: second\n    cmd: busybox echo live-two\n    when: [first]\n";
  const queued = await fetch(`${base}/runs`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("KILN_TOKEN")}`, "content-type": "application/json" },
    body: JSON.stringify({ type: "EncodedTaskRunRequest", source: { kind: "none" }, encodedTaskContent: Buffer.from(twoSteps).toString("base64") }),
  });
  check(queued.status === 201, `queued a run through the API: ${queued.status}`);
  const liveId = (await queued.json()).runId;
  const liveRow = page.locator(`table.runs tbody tr[data-run="${liveId}"]`);
  await liveRow.waitFor();
  // Asked of the table, not of the row: a status change replaces the row element at any time.
  await page.waitForFunction((id) => document.querySelector("table.runs tbody tr")?.dataset.run === id, liveId);
  report.steps.push(`new run ${liveId} appeared on top`);
  await liveRow.locator(".status", { hasText: "Succeeded" }).waitFor({ timeout: 120000 });
  check(await page.evaluate(() => window.kilnSamePage === true), "its status changed to Succeeded without a reload");
  await page.getByRole("link", { name: liveId, exact: true }).click();
  await page.locator('table.steps tr[data-step="second"] .status', { hasText: "successful" }).waitFor();
  const stepRows = await page.locator("table.steps tbody tr").evaluateAll((rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  check(stepRows.length === 2 && stepRows[0][0] === "first" && stepRows[1][0] === "second", `steps listed in order: ${JSON.stringify(stepRows)}`);
  check(stepRows.every((r) => r[1] === "successful" && r[2] && r[3] && r[5] === "0"), "each step with its status, times and exit code");
  check(stepRows[1][6] === "first", "second depends on first");
  await page.locator("table.steps").getByRole("button", { name: "second" }).click();
  await page.locator(".log", { hasText: "live-two" }).waitFor();
  check(true, "a step's button shows its lines");
  await page.goto(`${base}/ui/runs/${env("LONG")}`);
  await page.locator('table.steps tr[data-step="ticks"] .status', { hasText: "running" }).waitFor({ timeout: 120000 });
  check(true, "a running run's step shows running");
  await page.goto(`${base}/`);

  // Filter: Succeeded runs only.
  await page.getByLabel("Status").selectOption("Succeeded");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/status=Succeeded/);
  await page.locator("table.runs tbody tr").first().waitFor();
  const statuses = await page.locator("table.runs tbody td:nth-child(3)").allTextContents();
  check(statuses.length > 0 && statuses.every((s) => s === "Succeeded"), `filtered by status: ${statuses}`);
  check(!(await page.getByRole("link", { name: env("LONG"), exact: true }).count()), "the running run is filtered out");
  await axe(page, "runs");

  // A finished run: ANSI colours as spans, markup as text, a line link that survives reload.
  const done = env("DONE");
  await page.goto(`${base}/ui/runs/${done}#L3`);
  const red = page.locator(".log span.fg1", { hasText: "red-text" });
  await red.waitFor();
  check(true, "ANSI red rendered as a .fg1 span");
  await page.locator(".log", { hasText: "<script>window.pwned=1</script>" }).waitFor();
  check(await page.evaluate(() => window.pwned === undefined), "markup in a log line did not run");
  check((await page.locator(".log img, .log script").count()) === 0, "markup in a log line is text, not elements");
  await page.locator("#L3.selected").waitFor();
  await page.reload();
  await page.locator("#L3.selected").waitFor();
  check(true, "line link #L3 selected, also after reload");
  await page.screenshot({ path: `${shots}/ui-run.png` });
  await axe(page, "run");

  // Re-run it: a new run, linked to this one.
  await page.getByRole("button", { name: "Re-run" }).click();
  await page.waitForURL((u) => u.pathname.startsWith("/ui/runs/") && !u.pathname.endsWith(`/${done}`));
  await page.locator("dd", { hasText: done }).waitFor();
  await page.locator("h1 .status", { hasText: "Succeeded" }).waitFor({ timeout: 120000 });
  check(true, `re-run ${page.url()} of ${done} succeeded`);

  // A running run: lines arrive live; cancel it.
  await page.goto(`${base}/ui/runs/${env("LONG")}`);
  await page.locator(".log", { hasText: "tick-2" }).waitFor();
  await page.locator(".log", { hasText: "tick-4" }).waitFor();
  check(true, "live lines arrived");
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.locator("h1 .status", { hasText: "Canceled" }).waitFor({ timeout: 120000 });
  check(true, "canceled the running run");

  // A task: its page, then Run now.
  const task = env("TASK");
  await page.goto(`${base}/ui/tasks`);
  await page.getByRole("link", { name: task, exact: true }).click();
  await page.getByRole("heading", { name: "Run now" }).waitFor();
  check((await page.locator("pre.definition").textContent()).includes("***"), "task secrets shown as ***");
  await axe(page, "task");
  await page.screenshot({ path: `${shots}/ui-task.png` });
  await page.getByLabel("Values").fill("greeting=from-the-browser");
  await page.getByRole("button", { name: "Run now" }).click();
  await page.waitForURL(/\/ui\/runs\//);
  await page.locator(".log", { hasText: "from-the-browser" }).waitFor({ timeout: 120000 });
  check(true, "Run now queued a task run with the override");
  await page.goto(`${base}/ui/tasks`);
  await axe(page, "tasks");

  // Agents (admin).
  await page.goto(`${base}/ui/agents`);
  await page.getByRole("heading", { name: "Agents", level: 2 }).waitFor();
  await axe(page, "agents");
  await page.screenshot({ path: `${shots}/ui-agents.png` });

  // ---- Large log (ui-logs): read by byte range, its end, a far line link, fullscreen ----
  {
    const big = env("BIG");
    const logUrl = `/runs/${big}/log`;
    // What the page reads of this log: every response body's size, and whether it was a range.
    const reads = [];
    const onRead = async (request) => {
      if (!new URL(request.url()).pathname.endsWith(logUrl)) return;
      const sizes = await request.sizes();
      reads.push({ range: request.headers()["range"], bytes: sizes.responseBodySize });
    };
    page.on("requestfinished", onRead);
    // The log as the API has it, read here (not by the page) to know the lines to expect.
    const raw = await (await page.request.get(base + logUrl)).text();
    const lines = raw.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    check(raw.length > 4_000_000 && lines.some((l) => l.includes("bigline 080000")), `big log: ${raw.length} bytes, ${lines.length} lines`);

    await page.goto(`${base}/ui/runs/${big}`);
    const lastRow = page.locator(".log .line", { hasText: "bigline 080000" });
    await lastRow.waitFor();
    check(true, "a few-MB log opens at its end: the last line is shown");
    const scroller = page.locator(".log");
    await scroller.evaluate((el) => { el.scrollTop = 0; });
    await page.locator(".log #L1").waitFor();
    await page.locator(".log .line", { hasText: "bigline 000001" }).waitFor();
    await scroller.evaluate((el) => { el.scrollTop = el.scrollHeight / 2; });
    await page.locator(".log .line:not(.pending)", { hasText: "bigline 0" }).first().waitFor();
    await scroller.evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await lastRow.waitFor();
    check(true, "scrolled to the top, the middle and back to the end: the last line is shown");
    const fetched = reads.reduce((n, r) => n + r.bytes, 0);
    check(reads.some((r) => r.range) && fetched < raw.length / 2,
      `read by range, not whole: ${reads.length} reads, ${fetched} of ${raw.length} bytes`);

    // A line link far into the log: found by counting chunks from the start, selected, in view.
    const far = 61234;
    await page.goto(`${base}/ui/runs/${big}#L${far}`);
    const farRow = page.locator(`.log #L${far}.selected`);
    await farRow.waitFor({ timeout: 60000 });
    const farText = await farRow.locator(".text").textContent();
    check(farText === lines[far - 1], `#L${far} selected and shows line ${far}: ${farText}`);
    check(await farRow.evaluate((row) => {
      const box = row.getBoundingClientRect(), pane = row.closest(".log").getBoundingClientRect();
      return box.top >= pane.top && box.bottom <= pane.bottom;
    }), `#L${far} is in view`);

    // Search covers the chunks read so far, and says so.
    await page.getByLabel("Search").fill("bigline 0612");
    const found = await page.locator(".found", { hasText: "lines" }).textContent();
    await page.locator(".log .line", { hasText: "bigline 061234" }).first().waitFor();
    check(/^\d+ lines in the .* loaded of .*$/.test(found), `search over the loaded part says so: ${found}`);
    await page.getByLabel("Search").fill("");

    // Fullscreen: the pane covers the window; the button (or Escape) leaves it.
    await page.getByRole("button", { name: "Fullscreen" }).click();
    await page.locator(".log-pane.fullscreen").waitFor();
    check(await page.locator(".log-pane").evaluate((el) => {
      const box = el.getBoundingClientRect();
      const view = document.documentElement;
      return box.left === 0 && box.top === 0 && Math.abs(box.width - view.clientWidth) <= 1 && Math.abs(box.height - view.clientHeight) <= 1;
    }), "fullscreen: the log pane covers the window");
    await page.screenshot({ path: `${shots}/ui-log-fullscreen.png` });
    await page.getByRole("button", { name: "Exit fullscreen" }).click();
    await page.locator(".log-pane:not(.fullscreen)").waitFor();
    await page.getByRole("button", { name: "Fullscreen" }).click();
    await page.keyboard.press("Escape");
    await page.locator(".log-pane:not(.fullscreen)").waitFor();
    check(true, "fullscreen left by its button and by Escape");
    page.off("requestfinished", onRead);
  }
  // ---- end of the large-log block ----

  // ---- Narrow screen (ui-logs): no horizontal page scroll at 390×844 ----
  {
    await page.setViewportSize({ width: 390, height: 844 });
    const pages = [["runs", "/", page.getByRole("heading", { name: "Runs" })],
      ["run", `/ui/runs/${env("DONE")}`, page.locator(".log .line", { hasText: "third line" })],
      ["tasks", "/ui/tasks", page.getByRole("link", { name: env("TASK"), exact: true })],
      ["agents", "/ui/agents", page.getByRole("heading", { name: "Agents", level: 2 })]];
    for (const [name, path, ready] of pages) {
      await page.goto(base + path);
      await ready.waitFor();
      const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      check(widths[0] <= widths[1], `${name} page at 390px: page width ${widths[0]} ≤ ${widths[1]}`);
    }
    await page.goto(`${base}/ui/runs/${env("DONE")}`);
    await page.locator(".log .line", { hasText: "third line" }).waitFor();
    await page.screenshot({ path: `${shots}/ui-run-narrow.png` });
    await page.setViewportSize({ width: 1280, height: 900 });
  }
  // ---- end of the narrow-screen block ----

  // Sign out: back to the sign-in form, the cookie's session is gone.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API token").waitFor();
  await axe(page, "sign-in");
  report.ok = true;
} catch (e) {
  report.error = String(e.stack ?? e);
  const page = context.pages()[0];
  if (page) report.failedPage = `${page.url()}\n${await page.locator("body").innerText().catch(() => "")}`;
} finally {
  await context.close();
}
console.log(JSON.stringify(report));
