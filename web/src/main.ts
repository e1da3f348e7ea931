// The app's shell: sign-in, navigation and routing between pages by path (`/`, `/ui/runs/ID`,
// `/ui/tasks`, `/ui/tasks/NAME`, `/ui/agents`); the URL's hash stays free for `#L120` line links.

import "./style.css";
import * as api from "./api";
import { clear, h } from "./dom";
import { agentsPage, runPage, runsPage, taskPage, tasksPage } from "./pages";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
let leave: (() => void) | undefined;

export function go(path: string): void {
  history.pushState(null, "", path);
  void route();
}

function link(path: string, text: string): HTMLAnchorElement {
  const current = location.pathname === path || (path !== "/" && location.pathname.startsWith(path));
  return h("a", { href: path, "aria-current": current ? "page" : undefined }, text);
}

function navigation(session: api.Session | null): void {
  clear(nav);
  if (!session) return;
  const out = h("button", { type: "button", class: "link" }, "Sign out");
  out.addEventListener("click", async () => { await api.signOut(); void route(); });
  nav.append(link("/", "Runs"), link("/ui/tasks", "Tasks"));
  if (session.role === "admin") nav.append(link("/ui/agents", "Agents"));
  nav.append(h("span", { class: "who" }, session.name), out);
}

function signInPage(): void {
  const token = h("input", { id: "token", type: "password", autocomplete: "off", required: true, placeholder: "kiln_…" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to kiln"),
    h("p", {}, "Paste an API token (`kiln login` uses the same). It is exchanged for a session cookie and not kept by the page."),
    h("label", { for: "token" }, "API token"), token,
    h("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await api.signIn(token.value.trim()); void route(); }
    catch (err) { error.textContent = (err as Error).message; }
  });
  main.append(form);
  token.focus();
}

async function route(): Promise<void> {
  leave?.();
  leave = undefined;
  clear(main);
  const session = api.current() ?? (await api.restore());
  navigation(session);
  if (!session) return signInPage();
  const path = location.pathname;
  let m: RegExpMatchArray | null;
  if ((m = path.match(/^\/ui\/runs\/([^/]+)$/))) leave = await runPage(main, decodeURIComponent(m[1]));
  else if ((m = path.match(/^\/ui\/tasks\/([^/]+)$/))) leave = await taskPage(main, decodeURIComponent(m[1]));
  else if (path === "/ui/tasks") await tasksPage(main);
  else if (path === "/ui/agents") await agentsPage(main);
  else leave = await runsPage(main);
}

document.addEventListener("click", (e) => {
  const a = (e.target as Element).closest("a");
  if (!a || a.target || a.hasAttribute("download") || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/runs/")) return;
  if (url.pathname === location.pathname && url.hash) return;
  e.preventDefault();
  go(url.pathname + url.search + url.hash);
});
window.addEventListener("popstate", () => void route());
void route();
