// The app's only way to the server: the same JSON API as the CLI, authenticated by the session
// cookie (HttpOnly: no script reads it). Writes carry the session's CSRF token, which the
// server requires of every state-changing request made with the cookie.

export interface Session { name: string; role: "admin" | "user"; csrfToken: string; expiryTime: string }
export interface Image { registry: string; repository: string; tag: string; digest: string }
export interface SourceTrigger { eventType: string; commitId: string; pullRequestId?: string; repositoryUrl: string; branchName: string; providerType: string }
export interface Step { id: string; status: string; startTime?: string; finishTime?: string; exitCode?: number; dependsOn: string[] }
export interface ImageReference { registry: string; repository: string; tag?: string; digest: string; digestKind?: string; reference: string }
export interface Dependency { image?: ImageReference | null; runtimeDependency?: ImageReference | null; buildtimeDependency: ImageReference[]; git?: { gitHeadRevision: string } }
export interface Run {
  runId: string; status: string; runType: string; trigger: string;
  triggerDetail?: { sourceTrigger?: SourceTrigger; timerTrigger?: { timerTriggerName: string; scheduleOccurrence: string }; imageUpdateTrigger?: unknown };
  task?: string; createTime: string; startTime?: string; finishTime?: string; lastUpdatedTime: string;
  platform: { os: string; architecture: string; variant?: string }; timeout: number; outputImages: Image[];
  dependencies?: Dependency[]; runErrorMessage?: string; logLength: number; agentPoolName?: string; agentName?: string;
  waitingReason?: string | null; request?: unknown; rerunOf?: string; steps: Step[];
}
export interface List<T> { value: T[]; nextLink?: string }

export class ApiError extends Error {
  constructor(public status: number, message: string) { super(message); }
}

let session: Session | null = null;

export function current(): Session | null { return session; }

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrfToken;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const text = await response.text();
    let message = response.statusText;
    try { message = JSON.parse(text).error.message; } catch { /* not the error shape */ }
    throw new ApiError(response.status, message);
  }
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => call<T>("POST", path, body);

export async function restore(): Promise<Session | null> {
  // 204: not signed in.
  try { session = (await get<Session | undefined>("/session")) ?? null; } catch { session = null; }
  return session;
}
export async function signIn(token: string): Promise<Session> {
  session = await post<Session>("/session", { token });
  return session;
}
export async function signOut(): Promise<void> {
  await call<void>("DELETE", "/session");
  session = null;
}

export const enc = encodeURIComponent;
