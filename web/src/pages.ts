// The pages: each reads the JSON API, renders with dom.ts (text only), and returns what stops
// its live parts (the log's live stream) when the user leaves.

import * as api from "./api";
import { enc, type Run } from "./api";
import { append, clear, duration, h, when, type Child } from "./dom";
import { LogView } from "./log";
import { go } from "./main";

const ACTIVE = ["Queued", "Started", "Running"];
const STATUSES = ["", "Queued", "Started", "Running", "Succeeded", "Failed", "Canceled", "Error", "Timeout"];
const TRIGGERS = ["", "Manual", "Commit", "Pull Request", "Timer", "Image Update"];

function status(s: string): HTMLElement {
  return h("span", { class: `status s-${s.toLowerCase()}` }, s);
}

function failure(into: HTMLElement, e: unknown): void {
  append(into, h("p", { class: "error", role: "alert" }, (e as Error).message));
}

function select(id: string, label: string, options: string[], value: string): [HTMLElement, HTMLSelectElement] {
  const sel = h("select", { id, name: id });
  for (const o of options) sel.append(h("option", { value: o, selected: o === value }, o || "any"));
  return [h("label", { for: id }, label), sel];
}

function field(id: string, label: string, value: string): [HTMLElement, HTMLInputElement] {
  const input = h("input", { id, name: id, value, type: id === "search" ? "search" : "text" });
  return [h("label", { for: id }, label), input];
}

function runRow(r: Run): HTMLTableRowElement {
  const detail = r.triggerDetail?.sourceTrigger;
  return h("tr", { "data-run": r.runId, "data-created": r.createTime },
    h("td", {}, h("a", { href: `/ui/runs/${enc(r.runId)}` }, r.runId)),
    h("td", {}, r.task ? h("a", { href: `/ui/tasks/${enc(r.task)}` }, r.task) : ""),
    h("td", {}, status(r.status)),
    h("td", {}, r.trigger, detail ? ` ${detail.branchName} ${detail.commitId.slice(0, 10)}` : ""),
    h("td", {}, r.agentName ?? ""),
    h("td", {}, when(r.startTime ?? r.createTime)),
    h("td", {}, duration(r.startTime, r.finishTime)));
}

function runsTable(runs: Run[]): HTMLTableElement {
  return h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, ...["Run", "Task", "Status", "Trigger", "Agent", "Started", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...runs.map(runRow)));
}

/// `/`: runs, newest first, with the API's filters (kept in the URL's query) and its pages; live
/// through the watch form of the same query (`GET /runs` as server-sent events), which updates
/// rows in place, adds new runs in order and drops runs that stop matching.
export async function runsPage(main: HTMLElement): Promise<() => void> {
  const params = new URLSearchParams(location.search);
  const [sl, st] = select("status", "Status", STATUSES, params.get("status") ?? "");
  const [tl, tr] = select("trigger", "Trigger", TRIGGERS, params.get("trigger") ?? "");
  const fields = ["task", "agent", "agentPool", "branch", "image", "search"].map((k) => field(k, k === "agentPool" ? "Pool" : k[0].toUpperCase() + k.slice(1), params.get(k) ?? ""));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter runs" }, sl, st, tl, tr, ...fields.flat(), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.querySelectorAll<HTMLInputElement | HTMLSelectElement>("input, select")) if (el.value) q.set(el.name, el.value);
    go(q.size ? `/?${q}` : "/");
  });
  const table = runsTable([]);
  const rows = table.tBodies[0];
  const empty = h("p", {}, "No runs match.");
  const list = h("div", { class: "list" }, table, empty);
  main.append(h("h1", {}, "Runs"), form, list);
  const query = new URLSearchParams(params);
  if (!query.has("top")) query.set("top", "50");
  let next: string | undefined = `/runs?${query}`;
  const more = h("button", { type: "button" }, "Older runs");
  const shown = () => { table.hidden = !rows.rows.length; empty.hidden = !table.hidden; };
  const page = async () => {
    if (!next) return;
    try {
      const got: api.List<Run> = await api.get<api.List<Run>>(next);
      next = got.nextLink;
      rows.append(...got.value.map(runRow));
      more.hidden = !next;
    } catch (e) { failure(list, e); }
    shown();
  };
  more.addEventListener("click", () => void page());
  main.append(more);
  await page();

  // Live: each record replaces its row, or goes where its creation time puts it among the
  // loaded rows (not below them while older pages are not loaded).
  const row = (id: string) => [...rows.rows].find((r) => r.dataset.run === id);
  const source = new EventSource(`/runs?${query}`);
  source.addEventListener("run", (e) => {
    const run = JSON.parse((e as MessageEvent<string>).data) as Run;
    const fresh = runRow(run);
    const old = row(run.runId);
    if (old) old.replaceWith(fresh);
    else {
      const older = [...rows.rows].find((r) => (r.dataset.created ?? "") < run.createTime);
      if (older) rows.insertBefore(fresh, older);
      else if (!next) rows.append(fresh);
    }
    shown();
  });
  source.addEventListener("removed", (e) => { row((e as MessageEvent<string>).data)?.remove(); shown(); });
  source.addEventListener("ready", () => { table.dataset.live = "true"; });
  return () => source.close();
}

function dl(pairs: [string, string | Node | undefined | null][]): HTMLElement {
  const out = h("dl", { class: "record" });
  for (const [k, v] of pairs) if (v !== undefined && v !== null && v !== "") out.append(h("dt", {}, k), h("dd", {}, v));
  return out;
}

function trigger(run: Run): string {
  const d = run.triggerDetail ?? {};
  if (d.sourceTrigger) {
    const s = d.sourceTrigger;
    return `${run.trigger}: ${s.repositoryUrl} ${s.branchName} @ ${s.commitId}${s.pullRequestId ? ` (PR ${s.pullRequestId})` : ""}`;
  }
  if (d.timerTrigger) return `Timer ${d.timerTrigger.timerTriggerName} (${when(d.timerTrigger.scheduleOccurrence)})`;
  if (d.imageUpdateTrigger) return `Image update: ${JSON.stringify(d.imageUpdateTrigger)}`;
  return run.trigger;
}

/// A run's steps as its agent reported them; each step's ID shows only its lines in the log.
function stepsTable(run: Run, selected: string, pick: (step: string) => void): HTMLElement {
  if (!run.steps.length) return h("p", {}, ACTIVE.includes(run.status) ? "Not planned yet." : "No steps reported.");
  const filter = (id: string, label: string) => {
    const b = h("button", { type: "button", value: id, "aria-pressed": String(id === selected) }, label);
    b.addEventListener("click", () => pick(id));
    return b;
  };
  const body = h("tbody");
  for (const s of run.steps) {
    body.append(h("tr", { "data-step": s.id },
      h("td", {}, filter(s.id, s.id)),
      h("td", {}, h("span", { class: `status s-${s.status}` }, s.status)),
      h("td", {}, when(s.startTime)), h("td", {}, when(s.finishTime)),
      h("td", {}, s.startTime && (s.finishTime || s.status === "running") ? duration(s.startTime, s.finishTime) : ""),
      h("td", {}, s.exitCode ?? ""),
      h("td", {}, s.dependsOn.join(", "))));
  }
  return h("div", {},
    h("table", { class: "steps" },
      h("thead", {}, h("tr", {}, ...["Step", "Status", "Started", "Finished", "Duration", "Exit code", "Depends on"].map((c) => h("th", { scope: "col" }, c)))),
      body),
    filter("", "Whole log"));
}

/// A table with a header row of `columns` and a row of cells per entry of `rows`.
function table(cls: string, columns: string[], rows: Child[][]): HTMLTableElement {
  return h("table", { class: cls },
    h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))));
}

/// `registry/repository:tag`.
function imageName(i?: { registry: string; repository: string; tag?: string } | null): string {
  return i ? `${i.registry}/${i.repository}${i.tag ? `:${i.tag}` : ""}` : "";
}

/// The dependency report: one row per image a build step tagged and each image it depends on.
function dependenciesTable(deps: api.Dependency[]): HTMLElement {
  const rows: Child[][] = [];
  for (const d of deps) {
    const on: [string, api.ImageReference][] = [
      ...(d.runtimeDependency ? [["runtime", d.runtimeDependency] as [string, api.ImageReference]] : []),
      ...d.buildtimeDependency.map((b) => ["buildtime", b] as [string, api.ImageReference])];
    for (const [kind, dep] of on) rows.push([imageName(d.image), kind, imageName(dep), h("code", {}, dep.digest)]);
    if (d.git?.gitHeadRevision) rows.push([imageName(d.image), "git commit", d.git.gitHeadRevision, ""]);
  }
  return table("dependencies", ["Image", "Kind", "Depends on", "Digest"], rows);
}

/// `/ui/runs/ID`: the record, its steps, and the log, live while the run runs (the record
/// through the watch form of `GET /runs/ID`, the log through its own stream).
export async function runPage(main: HTMLElement, id: string): Promise<() => void> {
  let run: Run;
  try { run = await api.get<Run>(`/runs/${enc(id)}`); } catch (e) { failure(main, e); return () => {}; }
  const head = h("div", { class: "run-head" });
  const record = h("div");
  const actions = h("div", { class: "actions" });
  const steps = h("div", { class: "step-list" });
  const log = new LogView(run.runId, run.logLength);
  let step = "";
  const pick = (s: string) => {
    step = s; log.setStep(s);
    for (const b of steps.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.value === s));
  };
  const message = h("p", { class: "error", role: "alert" });
  const render = () => {
    clear(head); clear(record); clear(actions); clear(steps);
    head.append(h("h1", {}, `Run ${run.runId} `, status(run.status)));
    record.append(dl([
      ["Task", run.task ? h("a", { href: `/ui/tasks/${enc(run.task)}` }, run.task) : "(quick run)"],
      ["Trigger", trigger(run)],
      ["Re-run of", run.rerunOf ? h("a", { href: `/ui/runs/${enc(run.rerunOf)}` }, run.rerunOf) : undefined],
      ["Agent", [run.agentName, run.agentPoolName && `pool ${run.agentPoolName}`].filter(Boolean).join(", ") || run.waitingReason || ""],
      ["Platform", [run.platform.os, run.platform.architecture, run.platform.variant].filter(Boolean).join("/")],
      ["Queued", when(run.createTime)], ["Started", when(run.startTime)], ["Finished", when(run.finishTime)],
      ["Duration", duration(run.startTime, run.finishTime)],
      ["Output images", run.outputImages.map((i) => `${i.registry}/${i.repository}:${i.tag}@${i.digest}`).join("\n")],
      ["Dependencies", run.dependencies?.length ? dependenciesTable(run.dependencies) : undefined],
      ["Error", run.runErrorMessage],
    ]));
    steps.append(stepsTable(run, step, pick));
    if (ACTIVE.includes(run.status)) {
      const cancel = h("button", { type: "button" }, "Cancel");
      cancel.addEventListener("click", async () => {
        try { run = await api.post<Run>(`/runs/${enc(run.runId)}/cancel`); render(); } catch (e) { message.textContent = (e as Error).message; }
      });
      actions.append(cancel);
    }
    const rerun = h("button", { type: "button" }, "Re-run");
    rerun.addEventListener("click", async () => {
      try { const again = await api.post<Run>(`/runs/${enc(run.runId)}/rerun`); go(`/ui/runs/${enc(again.runId)}`); }
      catch (e) { message.textContent = (e as Error).message; }
    });
    actions.append(rerun, h("a", { href: `/runs/${enc(run.runId)}/log`, download: `${run.runId}.log`, class: "button" }, "Raw log"));
  };
  render();

  // The log pane has its own tools (search, follow, timestamps, fullscreen); the step filter is
  // the steps table.
  main.append(head, actions, message, record, h("h2", {}, "Steps"), steps, h("h2", {}, "Log"), log.root);

  // The record (status, steps) live until the run ends.
  const watch = new EventSource(`/runs/${enc(run.runId)}`);
  watch.addEventListener("run", (e) => {
    run = JSON.parse((e as MessageEvent<string>).data) as Run;
    render();
    if (!ACTIVE.includes(run.status)) watch.close();
  });
  return () => { log.close(); watch.close(); };
}

// A task as the API shows it: its definition's fields (secrets as `***`) beside these.
interface Task { name: string; commitTriggerEnabled: boolean; pullRequestTriggerEnabled: boolean; baseImageTriggerEnabled: boolean; timers: { name: string; schedule: string; status: string; nextFireTime?: string }[];
  webhook: { url: string; secret: string };
  baseImageDependencies: { type: string; registry: string; repository: string; tag: string; digest: string }[];
  history: { time: string; kind: string; detail: string }[] }

/// `/ui/tasks`: the tasks, each with its last run.
export async function tasksPage(main: HTMLElement): Promise<void> {
  main.append(h("h1", {}, "Tasks"));
  try {
    const tasks = await api.get<api.List<Task>>("/tasks?top=0");
    const body = h("tbody");
    for (const t of tasks.value) {
      const last = (await api.get<api.List<Run>>(`/runs?task=${enc(t.name)}&top=1`)).value[0];
      const triggers = [t.timers.length ? `${t.timers.length} timer(s)` : "", t.commitTriggerEnabled ? "commit" : "",
        t.pullRequestTriggerEnabled ? "pull request" : "", t.baseImageTriggerEnabled ? "base image" : ""].filter(Boolean).join(", ");
      body.append(h("tr", {}, h("td", {}, h("a", { href: `/ui/tasks/${enc(t.name)}` }, t.name)),
        h("td", {}, last ? h("a", { href: `/ui/runs/${enc(last.runId)}` }, last.runId) : ""),
        h("td", {}, last ? status(last.status) : ""), h("td", {}, triggers)));
    }
    main.append(tasks.value.length ? h("table", {}, h("thead", {}, h("tr", {}, ...["Task", "Last run", "Status", "Triggers"].map((c) => h("th", { scope: "col" }, c)))), body) : h("p", {}, "No tasks yet."));
  } catch (e) { failure(main, e); }
}

/// `/ui/tasks/NAME`: the definition (secrets as the API shows them, `***`), timers, webhook,
/// base images, recent runs, and Run now with overrides.
export async function taskPage(main: HTMLElement, name: string): Promise<() => void> {
  let task: Task;
  try { task = await api.get<Task>(`/tasks/${enc(name)}`); } catch (e) { failure(main, e); return () => {}; }
  main.append(h("h1", {}, "Task ", h("span", { class: "name" }, task.name)));
  const values = h("textarea", { id: "values", rows: "3", placeholder: "name=value, one per line" });
  const file = h("input", { id: "file", type: "text" });
  const target = h("input", { id: "target", type: "text" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "run-now", "aria-labelledby": "run-now" }, h("h2", { id: "run-now" }, "Run now"),
    h("label", { for: "values" }, "Values"), values, h("label", { for: "file" }, "Dockerfile or task file"), file,
    h("label", { for: "target" }, "Target stage"), target, h("button", { type: "submit" }, "Run now"), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body: Record<string, unknown> = {
      values: values.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const at = l.indexOf("="); return { name: at < 0 ? l : l.slice(0, at), value: at < 0 ? "" : l.slice(at + 1) };
      }),
    };
    if (file.value) body.file = file.value;
    if (target.value) body.target = target.value;
    try { const run = await api.post<Run>(`/tasks/${enc(task.name)}/runs`, body); go(`/ui/runs/${enc(run.runId)}`); }
    catch (err) { error.textContent = (err as Error).message; }
  });
  const secret = h("code", {}, "***");
  const reveal = h("button", { type: "button" }, "Reveal secret");
  reveal.addEventListener("click", () => { secret.textContent = task.webhook.secret; reveal.hidden = true; });
  const timers = h("ul");
  for (const t of task.timers) {
    const next = t.nextFireTime ? `next ${when(t.nextFireTime)} (${new Date(t.nextFireTime).toISOString()})` : "not scheduled";
    timers.append(h("li", {}, `${t.name}: ${t.schedule} ${t.status}, ${next}`));
  }
  const runs = h("div");
  main.append(form,
    h("h2", {}, "Webhook"), h("p", {}, h("code", {}, task.webhook.url), " secret ", secret, " ", reveal),
    h("h2", {}, "Timers"), task.timers.length ? timers : h("p", {}, "None."),
    h("h2", {}, "Base images"), task.baseImageDependencies.length
      ? table("bases", ["Type", "Image", "Digest"], task.baseImageDependencies.map((b) => [b.type, imageName(b), h("code", {}, b.digest)]))
      : h("p", {}, "None."),
    h("h2", {}, "Recent runs"), runs,
    h("h2", {}, "Definition"), h("pre", { class: "definition" }, JSON.stringify(definition(task), null, 2)),
    h("h2", {}, "History"), task.history.length
      ? table("history", ["Time", "Event", "Detail"], task.history.map((e) => [when(e.time), e.kind, e.detail]))
      : h("p", {}, "None."));
  try { runs.append(runsTable((await api.get<api.List<Run>>(`/runs?task=${enc(task.name)}&top=10`)).value)); } catch (e) { failure(runs, e); }
  return () => {};
}

/// The task's definition: what the API shows but its webhook, timers, history and runs.
function definition(task: Task): Record<string, unknown> {
  const { webhook: _w, timers: _t, history: _h, baseImageDependencies: _b, ...rest } = task;
  return rest;
}

interface Agent { name: string; kind: string; server?: string; pool?: string; platforms: { os: string; architecture: string }[]; capacity?: number; runsInHand: number; version?: string; lastSeen?: string }

/// `/ui/agents` (admin tokens): pools and agents with what they hold.
export async function agentsPage(main: HTMLElement): Promise<void> {
  main.append(h("h1", {}, "Agents"));
  try {
    const [agents, pools] = await Promise.all([api.get<api.List<Agent>>("/agents"), api.get<api.List<{ name: string }>>("/agentPools")]);
    main.append(h("h2", {}, "Pools"), h("ul", {}, ...pools.value.map((p) => h("li", {}, h("a", { href: `/?agentPool=${enc(p.name)}` }, p.name)))));
    const body = h("tbody");
    for (const a of agents.value) {
      body.append(h("tr", {}, h("td", {}, h("a", { href: `/?agent=${enc(a.name)}` }, a.name)), h("td", {}, a.kind), h("td", {}, a.pool ?? ""),
        h("td", {}, a.platforms.map((p) => `${p.os}/${p.architecture}`).join(", ")), h("td", {}, `${a.runsInHand}/${a.capacity ?? "?"}`),
        h("td", {}, when(a.lastSeen)), h("td", {}, a.version ?? "")));
    }
    main.append(h("h2", {}, "Agents"), h("table", {}, h("thead", {}, h("tr", {}, ...["Agent", "Kind", "Pool", "Platforms", "Runs in hand", "Last seen", "Version"].map((c) => h("th", { scope: "col" }, c)))), body));
  } catch (e) { failure(main, e); }
}
