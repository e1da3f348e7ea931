// The log pane of a run: a view over the run's log as bytes, fetched by byte range (`Range`) in
// 256 KiB chunks around what is shown and never whole, so a 200 MB log opens at its end and
// scrolls without the tab holding or parsing all of it. Line starts are indexed per chunk as it
// arrives; a chunk not loaded yet counts as its size over the mean line length seen so far, and
// the view keeps its place when the real count replaces the estimate. Line numbers are known
// where every chunk before has been counted; a `#L` link beyond that scans from the start in
// 4 MiB reads. The tail is live through the API's plain follow stream (bytes with exact
// offsets, no polling). Only the rows in view are DOM; ANSI colours become spans (ansi.ts),
// text stays text (dom.ts). Search and the step filter cover the chunks loaded, and say so.

import { carry, plain, render, type Style } from "./ansi";
import { clear, h } from "./dom";

const LINE_HEIGHT = 20;
const CHUNK = 256 * 1024;
/// Chunks per request while scanning for a line number.
const SCAN = 16;
/// Chunks held in memory (their line counts are kept for all).
const KEEP = 64;
/// The scroll area's height cap (browsers cap an element's height near 33.5M px); past it one
/// pixel of scroll moves more than a pixel of lines.
const MAX_PX = 10_000_000;
/// Bytes of one line rendered; the rest is elided (a minified file printed on one line).
const MAX_LINE = 16 * 1024;
const NL = 10;
const STAMP = /^\S+ /;


/// Bytes `[k * CHUNK, k * CHUNK + len)` of the log and where its lines start.
interface Chunk {
  buf: Uint8Array;
  len: number;
  /// Absolute offsets of the lines that start in this chunk.
  starts: number[];
  /// The chunk's first byte starts a line (the byte before it is a newline, or there is none).
  lead: boolean;
  /// Each line's arrival time, when timestamps are shown.
  stamps?: string[];
}

const decoder = new TextDecoder();

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;
}

/// The last index in sorted `a` whose value is ≤ `x` (-1 if none).
function floorIndex(a: ArrayLike<number>, x: number): number {
  let lo = 0, hi = a.length - 1, at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] <= x) { at = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return at;
}

export class LogView {
  /// The pane: tools, then the scrolling log.
  readonly root: HTMLElement;

  private readonly url: string;
  private total: number;
  private readonly chunks = new Map<number, Chunk>();
  /// Line starts of every chunk ever loaded and complete (kept after its bytes are dropped).
  private readonly counts = new Map<number, number>();
  private readonly loading = new Set<number>();
  /// Chunks below this come by range; from it on, from the live stream.
  private liveChunk = 0;
  /// Where the live stream has reached, and the byte before it.
  private streamed = 0;
  private lastByte = NL;
  /// The live stream ended (the run is over); until then, who waits for its next bytes.
  private ended = false;
  private arrivals: (() => void)[] = [];
  /// Per chunk: rows before it (known or estimated), and whether all of them are known.
  private before: number[] = [0];
  private exact: boolean[] = [true];
  /// Search or step filter: the offsets of the matching lines (loaded chunks only).
  private matches: number[] | null = null;
  private filterStep = "";
  private query = "";
  private follow = true;
  private stamps = false;
  /// Chunks whose times are being fetched, and those to fetch again once that is back.
  private readonly stampsLoading = new Set<number>();
  private readonly stampsStale = new Set<number>();
  private selected = 0;
  private closed = false;
  private abort = new AbortController();
  private readonly scroller: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly window: HTMLElement;
  private readonly note: HTMLElement;
  private readonly found: HTMLElement;
  private readonly followBox: HTMLInputElement;
  private readonly onHash = () => this.fromHash();
  private readonly onKey = (e: KeyboardEvent) => { if (e.key === "Escape" && this.root.classList.contains("fullscreen")) this.fullscreen(false); };
  private readonly fullButton: HTMLButtonElement;

  constructor(runId: string, length: number) {
    this.url = `/runs/${encodeURIComponent(runId)}/log`;
    this.total = length;
    this.window = h("div", { class: "log-lines" });
    this.spacer = h("div", { class: "log-spacer" }, this.window);
    this.scroller = h("div", { class: "log", tabindex: "0", role: "log", "aria-label": "Run log" }, this.spacer);
    const search = h("input", { id: "log-search", type: "search", placeholder: "Search the log" });
    this.found = h("span", { class: "found", "aria-live": "polite" });
    search.addEventListener("input", () => this.search(search.value));
    this.followBox = h("input", { id: "follow", type: "checkbox", checked: true });
    this.followBox.addEventListener("change", () => this.setFollow(this.followBox.checked));
    const stamps = h("input", { id: "timestamps", type: "checkbox" });
    stamps.addEventListener("change", () => this.setTimestamps(stamps.checked));
    this.fullButton = h("button", { type: "button", class: "fullscreen-toggle", "aria-pressed": "false" }, "Fullscreen");
    this.fullButton.addEventListener("click", () => this.fullscreen(!this.root.classList.contains("fullscreen")));
    this.note = h("span", { class: "log-note", "aria-live": "polite" });
    const tools = h("div", { class: "log-tools" },
      h("label", { for: "log-search" }, "Search"), search, this.found,
      h("label", {}, this.followBox, " Follow"), h("label", {}, stamps, " Timestamps"), this.fullButton, this.note);
    this.root = h("section", { class: "log-pane", "aria-label": "Log" }, tools, this.scroller);
    this.scroller.addEventListener("scroll", () => {
      const atEnd = this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - LINE_HEIGHT;
      if (this.follow !== atEnd) this.setFollowFlag(atEnd);
      this.paint();
    });
    new ResizeObserver(() => this.relayout()).observe(this.scroller);
    window.addEventListener("hashchange", this.onHash);
    document.addEventListener("keydown", this.onKey);
    this.liveChunk = Math.floor(Math.max(0, length - 1) / CHUNK);
    this.streamed = Math.max(0, this.liveChunk * CHUNK - 1);
    this.relayout();
    void this.live();
    this.fromHash();
  }

  /// Stops the live stream and the page-wide listeners (the user left the page).
  close(): void {
    this.closed = true;
    this.abort.abort();
    window.removeEventListener("hashchange", this.onHash);
    document.removeEventListener("keydown", this.onKey);
  }

  setStep(step: string): void { this.filterStep = step; this.refilter(); }

  private setFollow(follow: boolean): void {
    this.setFollowFlag(follow);
    if (follow) this.relayout();
  }

  /// Lines matching `query` (case-insensitive) among the chunks loaded; the count is shown.
  private search(query: string): void {
    this.query = query.toLowerCase();
    this.refilter();
  }

  private fullscreen(on: boolean): void {
    this.root.classList.toggle("fullscreen", on);
    this.fullButton.setAttribute("aria-pressed", String(on));
    this.fullButton.textContent = on ? "Exit fullscreen" : "Fullscreen";
  }

  private setFollowFlag(follow: boolean): void {
    this.follow = follow;
    this.followBox.checked = follow;
  }

  private fromHash(): void {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (m) void this.select(Number(m[1]));
  }

  // --- The live tail ---------------------------------------------------------------------------

  /// Follows the log from the start of its last chunk (and the byte before it, which says
  /// whether that chunk begins a line) until the run ends; reconnects from where it stopped.
  private async live(): Promise<void> {
    while (!this.closed) {
      try {
        const response = await fetch(`${this.url}?offset=${this.streamed}&follow=true`, { signal: this.abort.signal });
        if (!response.ok || !response.body) throw new Error(`log: HTTP ${response.status}`);
        const reader = response.body.getReader();
        let at = this.streamed;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          this.append(at, value);
          at += value.length;
        }
        this.ended = true;
        this.arrived();
        return;
      } catch (e) {
        if (this.closed) return;
        this.note.textContent = `Log stream interrupted (${(e as Error).message}); reconnecting`;
        await new Promise((done) => setTimeout(done, 1000));
      }
    }
  }

  private append(at: number, data: Uint8Array): void {
    let p = at, i = 0;
    const start = this.liveChunk * CHUNK;
    while (i < data.length) {
      if (p < start) { this.lastByte = data[i]; p++; i++; continue; }
      const k = Math.floor(p / CHUNK);
      let c = this.chunks.get(k);
      if (!c) {
        c = { buf: new Uint8Array(CHUNK), len: 0, starts: [], lead: this.lastByte === NL };
        this.chunks.set(k, c);
      }
      const n = Math.min(data.length - i, (k + 1) * CHUNK - p);
      c.buf.set(data.subarray(i, i + n), c.len);
      this.index(k, c, c.len, c.len + n);
      c.len += n;
      this.lastByte = data[i + n - 1];
      if (c.len === CHUNK) { this.counts.set(k, c.starts.length); this.evict(this.viewChunk()); }
      p += n; i += n;
    }
    this.streamed = p;
    this.total = Math.max(this.total, p);
    if (this.matches) this.refilter(); else this.relayout();
    if (this.stamps) this.loadStamps(Math.floor((p - 1) / CHUNK));
    this.arrived();
  }

  private arrived(): void {
    for (const wake of this.arrivals.splice(0)) wake();
  }

  // --- Chunks ----------------------------------------------------------------------------------

  /// Records the line starts among bytes `[from, to)` of chunk `k`.
  private index(k: number, c: Chunk, from: number, to: number): void {
    const base = k * CHUNK;
    for (let p = from; p < to; p++) {
      const prev = p === 0 ? (c.lead ? NL : 0) : c.buf[p - 1];
      if (prev === NL) c.starts.push(base + p);
    }
  }

  private chunkCount(): number { return Math.ceil(this.total / CHUNK); }

  private loadable(k: number): boolean {
    return k < this.liveChunk || (k + 1) * CHUNK <= this.streamed;
  }

  /// Fetches chunks `[k, k + n)` in one range read, with the byte before them.
  private async fetchChunks(k: number, n: number): Promise<void> {
    const from = Math.max(0, k * CHUNK - 1);
    let until = Math.min((k + n) * CHUNK, this.total);
    while (until > k * CHUNK && !this.loadable(Math.floor((until - 1) / CHUNK))) until = Math.floor((until - 1) / CHUNK) * CHUNK;
    if (until <= k * CHUNK) return;
    const response = await fetch(this.url, { headers: { Range: `bytes=${from}-${until - 1}` }, signal: this.abort.signal });
    if (response.status !== 206) throw new Error(`log: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    let lead = k === 0 || bytes[0] === NL;
    let p = k === 0 ? 0 : 1;
    for (let j = k; p < bytes.length; j++) {
      const data = bytes.subarray(p, Math.min(bytes.length, p + CHUNK));
      if (!this.chunks.has(j)) {
        const c: Chunk = { buf: data, len: data.length, starts: [], lead };
        this.index(j, c, 0, c.len);
        this.chunks.set(j, c);
        this.counts.set(j, c.starts.length);
        if (this.stamps) this.loadStamps(j);
      }
      lead = data[data.length - 1] === NL;
      p += data.length;
    }
  }

  /// Loads chunk `k` if it is not there or coming; the view is laid out again when it comes.
  private want(k: number): void {
    if (k < 0 || k >= this.chunkCount() || this.chunks.has(k) || this.loading.has(k) || !this.loadable(k)) return;
    if (this.loading.size >= 4) return;
    this.loading.add(k);
    this.fetchChunks(k, 1).then(() => {
      this.loading.delete(k);
      this.evict(k);
      if (this.matches) this.refilter(); else this.relayout();
    }, (e) => { this.loading.delete(k); if (!this.closed) this.note.textContent = (e as Error).message; });
  }

  /// Drops the chunks farthest from `near` beyond [`KEEP`] (never the live one).
  private evict(near: number): void {
    if (this.chunks.size <= KEEP || this.matches) return;
    const far = [...this.chunks.keys()].filter((k) => this.loadable(k)).sort((a, b) => Math.abs(b - near) - Math.abs(a - near));
    for (const k of far.slice(0, this.chunks.size - KEEP)) this.chunks.delete(k);
  }

  /// The chunk of the view's top line.
  private viewChunk(): number {
    return this.rows() ? this.row(Math.floor(this.top() / LINE_HEIGHT))[0] : 0;
  }

  private lines(k: number): number {
    const c = this.chunks.get(k);
    if (c) return c.starts.length;
    const known = this.counts.get(k);
    if (known !== undefined) return known;
    let bytes = 0, lines = 0;
    for (const c of this.chunks.values()) { bytes += c.len; lines += c.starts.length; }
    const mean = lines ? bytes / lines : 80;
    return Math.max(1, Math.round(Math.min(CHUNK, this.total - k * CHUNK) / mean));
  }

  /// Text of the line starting at `p` in chunk `k` (its end may be in the next chunk, which
  /// the view asks for: it wants a chunk beyond the ones in view).
  private text(k: number, p: number): string {
    const c = this.chunks.get(k);
    if (!c) return "";
    const base = k * CHUNK;
    const j = floorIndex(c.starts, p);
    let end = j + 1 < c.starts.length ? c.starts[j + 1] : base + c.len;
    let bytes = c.buf.subarray(p - base, Math.min(end, p + MAX_LINE + 1) - base);
    if (j + 1 >= c.starts.length && c.len === CHUNK && c.buf[c.len - 1] !== NL) {
      const next = this.chunks.get(k + 1);
      if (next) {
        end = next.starts[0] ?? base + CHUNK + next.len;
        const more = next.buf.subarray(0, Math.max(0, Math.min(end, p + MAX_LINE + 1) - base - CHUNK));
        const joined = new Uint8Array(bytes.length + more.length);
        joined.set(bytes); joined.set(more, bytes.length);
        bytes = joined;
      }
    }
    const cut = bytes.length > MAX_LINE;
    let s = decoder.decode(cut ? bytes.subarray(0, MAX_LINE) : bytes).replace(/\r?\n$/, "");
    // A carriage return overwrites the line as a terminal would (progress bars).
    const cr = s.lastIndexOf("\r");
    if (cr >= 0 && cr < s.length - 1) s = s.slice(cr + 1);
    return cut ? `${s} … (line cut at ${MAX_LINE} bytes)` : s;
  }

  // --- Timestamps ------------------------------------------------------------------------------

  private setTimestamps(on: boolean): void {
    this.stamps = on;
    for (const [k, c] of this.chunks) if (on) this.loadStamps(k); else c.stamps = undefined;
    this.paint();
  }

  /// Each line's arrival time for chunk `k`: the same bytes with `timestamps=true`, whose n-th
  /// line carries the n-th line's time (the first is a continuation when the chunk does not
  /// begin a line). A request for a chunk already on its way is repeated once it is back.
  private loadStamps(k: number): void {
    const c = this.chunks.get(k);
    if (!c) return;
    if (this.stampsLoading.has(k)) { this.stampsStale.add(k); return; }
    this.stampsLoading.add(k);
    const len = c.len;
    fetch(`${this.url}?offset=${k * CHUNK}&length=${len}&timestamps=true`, { signal: this.abort.signal })
      .then((r) => r.ok ? r.text() : Promise.reject(new Error(`log: HTTP ${r.status}`)))
      .then((text) => {
        const stamps = text.split("\n").map((line) => STAMP.exec(line)?.[0].trim() ?? "");
        if (this.stamps) c.stamps = stamps.slice(c.lead ? 0 : 1, (c.lead ? 0 : 1) + c.starts.length);
        this.paint();
      }, (e) => { if (!this.closed) this.note.textContent = (e as Error).message; })
      .finally(() => {
        this.stampsLoading.delete(k);
        if (this.stampsStale.delete(k) && this.stamps) this.loadStamps(k);
      });
  }

  // --- Line numbers and links ------------------------------------------------------------------

  /// The line number of the line starting at `p` in chunk `k`, if every chunk before is counted.
  private lineNumber(k: number, p: number): number | undefined {
    const c = this.chunks.get(k);
    if (!c || !this.exact[k]) return undefined;
    return this.before[k] + floorIndex(c.starts, p) + 1;
  }

  /// Where line `n` starts, counting chunks from the log's start as far as needed (and waiting
  /// for the live stream while the line may still come).
  private async locate(n: number): Promise<[number, number] | undefined> {
    while (!this.closed) {
      this.layout();
      const count = this.chunkCount();
      let k = 0;
      while (k < count && this.exact[k + 1]) {
        if (this.before[k + 1] >= n) {
          if (!this.chunks.has(k)) await this.fetchChunks(k, 1);
          const c = this.chunks.get(k);
          return c ? [k, c.starts[n - this.before[k] - 1]] : undefined;
        }
        k++;
      }
      if (k < count && this.loadable(k)) {
        this.note.textContent = `Counting lines to find line ${n}: ${mb(k * CHUNK)} of ${mb(this.total)}`;
        await this.fetchChunks(k, SCAN);
        this.evict(k);
      } else if (this.ended) return undefined;
      else await new Promise<void>((arrived) => this.arrivals.push(arrived));
    }
    return undefined;
  }

  /// Selects line `n` (1-based) and scrolls it into view.
  private async select(n: number): Promise<void> {
    this.selected = n;
    this.setFollowFlag(false);
    const at = await this.locate(n).catch((e: Error) => { this.note.textContent = e.message; return undefined; });
    this.note.textContent = at ? "" : `Line ${n} is not in the log (yet)`;
    if (!at || this.selected !== n) { this.paint(); return; }
    this.layout();
    const [k, p] = at;
    const row = this.matches ? floorIndex(this.matches, p) : this.before[k] + floorIndex(this.chunks.get(k)?.starts ?? [], p);
    this.scrollToRow(Math.max(0, row), this.scroller.clientHeight / 3);
    this.paint();
  }

  // --- Filter (search and step) ----------------------------------------------------------------

  private refilter(): void {
    this.relayout(() => {
      const step = this.filterStep, q = this.query;
      if (!step && !q) {
        this.matches = null;
        this.found.textContent = "";
        return;
      }
      const matches: number[] = [];
      let loaded = 0;
      for (const k of [...this.chunks.keys()].sort((a, b) => a - b)) {
        const c = this.chunks.get(k);
        if (!c) continue;
        loaded += c.len;
        for (const p of c.starts) {
          const text = plain(this.text(k, p));
          if (step && !text.startsWith(step + " ") && !text.startsWith(step + "|")) continue;
          if (q && !text.toLowerCase().includes(q)) continue;
          matches.push(p);
        }
      }
      this.matches = matches;
      const partial = loaded < this.total ? ` in the ${mb(loaded)} loaded of ${mb(this.total)}` : "";
      this.found.textContent = q ? `${matches.length} lines${partial}` : partial ? `Step lines${partial}` : "";
    });
  }

  // --- Layout and painting ---------------------------------------------------------------------

  private rows(): number {
    return this.matches ? this.matches.length : this.before[this.before.length - 1];
  }

  private layout(): void {
    const count = this.chunkCount();
    this.before = [0];
    this.exact = [true];
    for (let k = 0; k < count; k++) {
      this.before.push(this.before[k] + this.lines(k));
      this.exact.push(this.exact[k] && (this.chunks.has(k) || this.counts.has(k)));
    }
    this.spacer.style.height = `${Math.min(this.rows() * LINE_HEIGHT, MAX_PX)}px`;
  }

  /// The virtual pixel offset of the view's top (rows × line height), from the scroll position.
  private top(): number {
    const view = this.scroller.clientHeight;
    const virtual = this.rows() * LINE_HEIGHT - view, real = this.scroller.scrollHeight - view;
    if (virtual <= 0 || real <= 0) return 0;
    return Math.min(virtual, this.scroller.scrollTop * (virtual / real));
  }

  private scrollToRow(row: number, below: number): void {
    const view = this.scroller.clientHeight;
    const virtual = this.rows() * LINE_HEIGHT - view, real = this.scroller.scrollHeight - view;
    if (virtual <= 0 || real <= 0) return;
    this.scroller.scrollTop = Math.max(0, row * LINE_HEIGHT - below) * (real / virtual);
  }

  /// The chunk and line offset of a row.
  private row(i: number): [number, number | undefined] {
    if (this.matches) { const p = this.matches[i]; return [Math.floor(p / CHUNK), p]; }
    const k = Math.max(0, floorIndex(this.before, i));
    const c = this.chunks.get(k);
    return [k, c?.starts[i - this.before[k]]];
  }

  /// Lays out again after `change` and keeps the view where it was: at the end when following,
  /// else on the line at its top (estimates above it may have been replaced by counts, or a
  /// filter may have been set or cleared).
  private relayout(change?: () => void): void {
    const top = this.top();
    const first = Math.floor(top / LINE_HEIGHT);
    const [k, p] = this.rows() ? this.row(first) : [0, undefined];
    const within = top - first * LINE_HEIGHT;
    change?.();
    this.layout();
    if (this.follow) this.scroller.scrollTop = this.scroller.scrollHeight;
    else if (p !== undefined) {
      const row = this.matches ? floorIndex(this.matches, p) : this.before[k] + floorIndex(this.chunks.get(k)?.starts ?? [], p);
      this.scrollToRow(row, -within);
    }
    this.paint();
  }

  private paint(): void {
    const view = this.scroller.clientHeight;
    // Not laid out (not in the page yet, or hidden): nothing is in view, nothing to fetch.
    if (!view) return;
    const rows = this.rows();
    const top = this.top();
    const first = Math.floor(top / LINE_HEIGHT);
    const last = Math.min(rows, first + Math.ceil(view / LINE_HEIGHT) + 1);
    clear(this.window);
    this.window.style.transform = `translateY(${this.scroller.scrollTop - (top - first * LINE_HEIGHT)}px)`;
    let style: Style = {};
    if (!this.matches && first < rows) {
      // Colours carry over lines: start from the style the previous lines leave (bounded).
      const [k, p] = this.row(first);
      const c = this.chunks.get(k);
      if (c && p !== undefined) {
        const j = floorIndex(c.starts, p);
        for (let b = Math.max(0, j - 50); b < j; b++) style = carry(this.text(k, c.starts[b]), style);
      }
    }
    const wanted = new Set<number>();
    for (let i = first; i < last; i++) {
      const [k, p] = this.row(i);
      if (p === undefined) {
        wanted.add(k);
        this.window.appendChild(h("div", { class: "line pending" }, h("span", { class: "ln" }), "…"));
        continue;
      }
      const n = this.lineNumber(k, p);
      const text = h("span", { class: "text" });
      style = render(this.text(k, p), style, text);
      const c = this.chunks.get(k);
      const stamp = c?.stamps?.[floorIndex(c.starts, p)];
      const row = h("div", { class: n !== undefined && n === this.selected ? "line selected" : "line", id: n !== undefined ? `L${n}` : undefined },
        n !== undefined ? h("a", { class: "ln", href: `#L${n}`, "aria-label": `Line ${n}` }, String(n)) : h("span", { class: "ln" }),
        this.stamps ? h("span", { class: "ts" }, stamp ?? "") : undefined, text);
      this.window.appendChild(row);
    }
    if (!this.matches && rows) {
      // What is in view, and a chunk either side, so scrolling on finds them there.
      const [k0] = this.row(first), [k1] = this.row(Math.max(first, last - 1));
      for (let k = k0; k <= k1; k++) wanted.add(k);
      wanted.add(k0 - 1); wanted.add(k1 + 1);
    }
    for (const k of wanted) this.want(k);
  }
}
