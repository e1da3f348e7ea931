// ANSI SGR colour codes (ESC [ … m) to styled text spans. Only the codes the parser knows
// become classes; every other escape sequence is dropped; the text itself stays text.

import { h } from "./dom";

interface Style { fg?: string; bg?: string; bold?: boolean; dim?: boolean; italic?: boolean; underline?: boolean }

const ESCAPE = /\x1b\[([0-9;]*)([A-Za-z])|\x1b[^[]|\x1b$/g;

function apply(style: Style, codes: number[]): Style {
  const s = { ...style };
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) { for (const k of Object.keys(s)) delete (s as Record<string, unknown>)[k]; }
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 22) { s.bold = false; s.dim = false; }
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c >= 30 && c <= 37) s.fg = String(c - 30);
    else if (c >= 90 && c <= 97) s.fg = String(c - 90 + 8);
    else if (c === 39) delete s.fg;
    else if (c >= 40 && c <= 47) s.bg = String(c - 40);
    else if (c >= 100 && c <= 107) s.bg = String(c - 100 + 8);
    else if (c === 49) delete s.bg;
    else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
      const n = codes[i + 2];
      if (n !== undefined && n < 16) { if (c === 38) s.fg = String(n); else s.bg = String(n); }
      i += 2;
    } else if ((c === 38 || c === 48) && codes[i + 1] === 2) i += 4;
  }
  return s;
}

function classes(s: Style): string {
  const out: string[] = [];
  if (s.fg) out.push(`fg${s.fg}`);
  if (s.bg) out.push(`bg${s.bg}`);
  if (s.bold) out.push("b");
  if (s.dim) out.push("dim");
  if (s.italic) out.push("i");
  if (s.underline) out.push("u");
  return out.join(" ");
}

/// A line's text with its escapes removed (what search matches).
export function plain(line: string): string {
  return line.replace(ESCAPE, "");
}

/// The style a line leaves for the next (what `render` returns), without making DOM.
export function carry(line: string, style: Style): Style {
  let s = style;
  for (const m of line.matchAll(ESCAPE)) if (m[2] === "m") s = apply(s, (m[1] || "0").split(";").map((x) => Number(x) || 0));
  return s;
}

/// The styled spans of one line, starting from `style` (colours carry across lines); returns
/// the style the line ends with.
export function render(line: string, style: Style, into: HTMLElement): Style {
  let last = 0;
  let s = style;
  const push = (text: string) => {
    if (!text) return;
    const cls = classes(s);
    into.appendChild(cls ? h("span", { class: cls }, text) : document.createTextNode(text));
  };
  for (const m of line.matchAll(ESCAPE)) {
    push(line.slice(last, m.index));
    last = (m.index ?? 0) + m[0].length;
    if (m[2] === "m") s = apply(s, (m[1] || "0").split(";").map((x) => Number(x) || 0));
  }
  push(line.slice(last));
  return s;
}

export type { Style };
