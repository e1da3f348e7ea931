// The log pane: every line of a run's log held as a string, only the lines in view made into
// DOM (a fixed line height makes the viewport's lines a slice), so a long log scrolls without
// building a node per line. Lines come from the log API's server-sent events (live while the
// run runs, resuming at the last byte offset) and are split into steps by their `step | `
// prefix. ANSI colours become spans (ansi.ts); `#L120` selects and scrolls to a line.

import { plain, render, type Style } from "./ansi";
import { clear, h } from "./dom";

const LINE_HEIGHT = 20;
const OVERSCAN = 20;

export interface Step { id: string; status: string; seconds?: number }

export class LogView {
  lines: string[] = [];
  private partial = "";
  private shown: number[] = [];
  private filterStep = "";
  private query = "";
  private follow = true;
  private selected = 0;
  readonly steps = new Map<string, Step>();
  readonly root: HTMLElement;
  private readonly scroller: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly window: HTMLElement;
  onSteps: () => void = () => {};
  onFollow: (follow: boolean) => void = () => {};

  constructor() {
    this.window = h("div", { class: "log-lines" });
    this.spacer = h("div", { class: "log-spacer" }, this.window);
    this.scroller = h("div", { class: "log", tabindex: "0", role: "log", "aria-label": "Run log" }, this.spacer);
    this.root = this.scroller;
    this.scroller.addEventListener("scroll", () => {
      const atEnd = this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - LINE_HEIGHT;
      if (this.follow !== atEnd) { this.follow = atEnd; this.onFollow(atEnd); }
      this.paint();
    });
  }

  /// Text that arrived (any split): complete lines are added, the rest waits for its end.
  add(text: string): void {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    for (const line of parts) this.push(line);
    this.refresh();
  }

  /// The run ended: a last line without a newline is a line too.
  end(): void {
    if (this.partial) { this.push(this.partial); this.partial = ""; this.refresh(); }
  }

  reset(): void {
    this.lines = []; this.partial = ""; this.steps.clear(); this.refresh();
  }

  private push(line: string): void {
    this.lines.push(line);
    const text = plain(line);
    const m = /^(\S+)\s*\| (.*)$/.exec(text);
    if (!m) return;
    const id = m[1];
    if (!this.steps.has(id) && id !== "kiln") { this.steps.set(id, { id, status: "running" }); this.onSteps(); }
    const step = this.steps.get(id);
    const done = /Step ID: \S+ marked as (\w+) \(elapsed time in seconds: ([0-9.]+)\)/.exec(m[2]);
    if (step && done) { step.status = done[1]; step.seconds = Number(done[2]); this.onSteps(); }
  }

  setStep(step: string): void { this.filterStep = step; this.refresh(); }
  setFollow(follow: boolean): void { this.follow = follow; if (follow) this.toEnd(); }

  /// Lines matching `query` (case-insensitive); returns how many.
  search(query: string): number {
    this.query = query.toLowerCase();
    this.refresh();
    return this.query ? this.shown.length : 0;
  }

  /// Selects line `n` (1-based, the log's numbering) and scrolls it into view.
  select(n: number): void {
    this.selected = n;
    const at = this.shown.indexOf(n - 1);
    if (at >= 0) {
      this.follow = false; this.onFollow(false);
      this.scroller.scrollTop = Math.max(0, at * LINE_HEIGHT - this.scroller.clientHeight / 3);
    }
    this.paint();
  }

  private refresh(): void {
    const step = this.filterStep;
    const q = this.query;
    if (!step && !q) {
      const from = this.shown.length && this.shown.length <= this.lines.length && this.shown[this.shown.length - 1] === this.shown.length - 1 ? this.shown.length : 0;
      if (from === 0) this.shown = [];
      for (let i = from; i < this.lines.length; i++) this.shown.push(i);
    } else {
      this.shown = [];
      this.lines.forEach((line, i) => {
        const text = plain(line);
        if (step && !text.startsWith(step + " ") && !text.startsWith(step + "|")) return;
        if (q && !text.toLowerCase().includes(q)) return;
        this.shown.push(i);
      });
    }
    this.spacer.style.height = `${this.shown.length * LINE_HEIGHT}px`;
    if (this.follow) this.toEnd(); else this.paint();
  }

  private toEnd(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.paint();
  }

  private paint(): void {
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / LINE_HEIGHT) - OVERSCAN);
    const count = Math.ceil(this.scroller.clientHeight / LINE_HEIGHT) + 2 * OVERSCAN;
    const last = Math.min(this.shown.length, first + count);
    clear(this.window);
    this.window.style.transform = `translateY(${first * LINE_HEIGHT}px)`;
    // Colours carry over lines: start from the style the previous lines leave (bounded look-back).
    let style: Style = {};
    const start = this.shown[first] ?? 0;
    for (let i = Math.max(0, start - 50); i < start; i++) style = render(this.lines[i], style, document.createElement("span"));
    for (let k = first; k < last; k++) {
      const i = this.shown[k];
      const n = i + 1;
      const text = h("span", { class: "text" });
      style = render(this.lines[i], style, text);
      const row = h("div", { class: n === this.selected ? "line selected" : "line", id: `L${n}` },
        h("a", { class: "ln", href: `#L${n}`, "aria-label": `Line ${n}` }, String(n)), text);
      this.window.appendChild(row);
    }
  }
}
