// OrbisVoice tenant dashboard: plain JS, no build step. Talks to /api/v1 on this origin with
// the user's access token; tokens live in sessionStorage (this tab only) and are refreshed
// once on expiry. Every piece of server data is written with textContent, never as HTML.
"use strict";

const AUTH_KEY = "orbis.dashboard.auth";
const $ = (selector, root = document) => root.querySelector(selector);

// --- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

const auth = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(AUTH_KEY)) || null;
    } catch {
      return null;
    }
  },
  set(value) {
    if (value) sessionStorage.setItem(AUTH_KEY, JSON.stringify(value));
    else sessionStorage.removeItem(AUTH_KEY);
  },
};

const UNAVAILABLE_TRIES = 8;
const BACK_SOON = "Back in a moment — the service is briefly unavailable. Retrying…";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function retryAfterMs(response) {
  return Math.min(Math.max(Number(response.headers.get("Retry-After")) || 1, 1), 10) * 1000;
}

async function request(method, path, body, { retry = true, anonymous = false } = {}) {
  const headers = { Accept: "application/json" };
  const tokens = auth.get();
  if (!anonymous && tokens) headers.Authorization = `Bearer ${tokens.access_token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const init = {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  };
  // Reads and logins are safe to send twice; anything else is left to the user.
  const repeatable = method === "GET" || path === "/auth/login";
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (err) {
    // Browsers abort requests when the device's network changes (Wi-Fi hand-over, VPN).
    if (!repeatable) throw err;
    await sleep(300);
    response = await fetch(`/api/v1${path}`, init);
  }
  // The service is away for a moment (maintenance, a restart): nginx or the API answers 503
  // with Retry-After. Wait and ask again, saying so; a change is not resent (its error,
  // "back in a moment", is shown and the user sends it again).
  for (let tries = 1; response.status === 503 && repeatable && tries < UNAVAILABLE_TRIES; tries += 1) {
    notify(BACK_SOON, "info");
    await sleep(retryAfterMs(response));
    response = await fetch(`/api/v1${path}`, init);
    if (response.status !== 503 && $("#notice").textContent === BACK_SOON) notify("");
  }
  if (response.status === 401 && retry && !anonymous && tokens && tokens.refresh_token) {
    if (await refreshTokens(tokens.refresh_token)) {
      return request(method, path, body, { retry: false });
    }
    signOut("Your session has expired. Please log in again.");
    throw new Superseded();
  }
  if (response.status === 204) return null;
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const err = (payload && payload.error) || {};
    throw new ApiError(response.status, err.code, err.message, err.field);
  }
  return payload;
}

async function refreshTokens(refreshToken) {
  try {
    const tokens = await request("POST", "/auth/refresh", { refresh_token: refreshToken }, {
      anonymous: true,
    });
    auth.set({ ...auth.get(), ...tokens });
    return true;
  } catch {
    return false;
  }
}

const api = {
  login: (body) => request("POST", "/auth/login", body, { anonymous: true }),
  signup: (body) => request("POST", "/auth/signup", body, { anonymous: true }),
  logout: (refreshToken) =>
    request("POST", "/auth/logout", { refresh_token: refreshToken }, { anonymous: true }),
  me: () => request("GET", "/me"),
  agents: () => request("GET", "/agents"),
  agent: (id) => request("GET", `/agents/${encodeURIComponent(id)}`),
  createAgent: (body) => request("POST", "/agents", body),
  updateAgent: (id, body) => request("PATCH", `/agents/${encodeURIComponent(id)}`, body),
  sessions: (query) => request("GET", `/sessions?${new URLSearchParams(query)}`),
  session: (id) => request("GET", `/sessions/${encodeURIComponent(id)}`),
  apiKeys: () => request("GET", "/api-keys"),
  createApiKey: (body) => request("POST", "/api-keys", body),
  revokeApiKey: (id) => request("DELETE", `/api-keys/${encodeURIComponent(id)}`),
  exportEndUser: (id) => request("GET", `/end-users/${encodeURIComponent(id)}/export`),
  eraseEndUser: (id) => request("DELETE", `/end-users/${encodeURIComponent(id)}`),
};

// --- helpers ------------------------------------------------------------------------------

function notify(message, kind = "error") {
  const box = $("#notice");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = !message;
}

// Shows what went wrong; a view given up on (signed out, superseded) has nothing to show.
function report(err) {
  if (!(err instanceof Superseded)) notify(describe(err));
}

function describe(err) {
  if (err instanceof ApiError) return err.field ? `${err.message} (${err.field})` : err.message;
  console.error(err);
  return "The server could not be reached. Check your connection and try again.";
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value == null ? "" : String(value);
  row.append(td);
  return td;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function seconds(ms) {
  return ms == null ? "—" : `${Math.round(ms / 1000)} s`;
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// A view shows itself with its render's `mount`; a view whose data arrives after the user
// has moved on finds its render superseded and shows nothing.
class Superseded extends Error {}
let renderSeq = 0;

function mounter() {
  const seq = ++renderSeq;
  return (templateId) => {
    if (seq !== renderSeq) throw new Superseded();
    const view = $("#view");
    view.replaceChildren($(templateId).content.cloneNode(true));
    return view;
  };
}

function snippetFor(agent) {
  return `<script src="${location.origin}/widget.js" data-agent="${agent.public_id}" async></script>`;
}

// --- session ------------------------------------------------------------------------------

// A notice that must survive the navigation that follows it (a navigation clears notices).
let noticeForNextView = "";

function signOut(message) {
  const tokens = auth.get();
  auth.set(null);
  if (tokens && tokens.refresh_token) api.logout(tokens.refresh_token).catch(() => {});
  removeTestWidget();
  if (location.hash === "#/login") {
    render();
    notify(message, "info");
  } else {
    noticeForNextView = message;
    location.hash = "#/login";
  }
}

// Navigates, re-rendering even when the hash is already there (no hashchange then).
function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function showChrome(signedIn) {
  $("#nav").hidden = !signedIn;
  $("#logout").hidden = !signedIn;
  const tokens = auth.get();
  $("#who").textContent = signedIn && tokens && tokens.email ? tokens.email : "";
}

async function loginView(mount) {
  showChrome(false);
  const view = mount("#tpl-login");
  const finish = (result) => {
    auth.set({
      access_token: result.access_token,
      refresh_token: result.refresh_token,
      email: result.user.email,
      org: result.org.name,
    });
    notify("");
    go("#/agents");
  };
  $("#login-form", view).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      finish(await api.login(formData(event.target)));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) notify("Wrong email or password.");
      else report(err);
    }
  });
  $("#signup-form", view).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      finish(await api.signup(formData(event.target)));
    } catch (err) {
      report(err);
    }
  });
}

// --- agents -------------------------------------------------------------------------------

async function agentsView(mount) {
  const { items } = await api.agents();
  const view = mount("#tpl-agents");
  const body = $("#agents-body", view);
  for (const agent of items) {
    const row = document.createElement("tr");
    const link = document.createElement("a");
    link.href = `#/agents/${agent.id}`;
    link.textContent = agent.name;
    cell(row, "").append(link);
    cell(row, agent.public_id).className = "mono";
    cell(row, agent.voice);
    cell(row, agent.allowed_origins.join(", ") || "none");
    cell(row, when(agent.updated_at));
    body.append(row);
  }
  $("#agents-empty", view).hidden = items.length > 0;
}

function fillAgentForm(form, agent) {
  for (const name of ["name", "instructions", "greeting", "voice", "language"]) {
    form.elements[name].value = agent[name] ?? "";
  }
  form.elements.max_session_seconds.value = agent.max_session_seconds;
  form.elements.max_concurrent_calls.value = agent.max_concurrent_calls;
  form.elements.allowed_origins.value = agent.allowed_origins.join("\n");
  const list = $("#tools-list", form);
  list.replaceChildren();
  for (const tool of agent.tools) addTool(list, tool);
}

// --- the agent's tools: one small form per tool ---------------------------------------------

const TOOL_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const NO_PARAMETERS = { type: "object", properties: {} };

function addTool(list, tool = {}) {
  const row = $("#tpl-tool").content.firstElementChild.cloneNode(true);
  const field = (name) => $(`[data-field="${name}"]`, row);
  for (const name of ["name", "description", "url"]) field(name).value = tool[name] ?? "";
  field("timeout_seconds").value = tool.timeout_seconds ?? 10;
  field("parameters").value = JSON.stringify(tool.parameters ?? NO_PARAMETERS, null, 2);
  // The schema is checked as it is typed; the server checks the rest on save.
  field("parameters").addEventListener("input", () => {
    const problem = parametersProblem(field("parameters").value);
    showFieldError(row, "parameters", problem);
  });
  $(".remove-tool", row).addEventListener("click", () => {
    row.remove();
    numberTools(list);
  });
  list.append(row);
  numberTools(list);
  return row;
}

function numberTools(list) {
  [...list.children].forEach((row, index) => {
    $("legend", row).textContent = `Tool ${index + 1}`;
  });
}

// Why a parameters text is not a usable schema ("" when it is); the server checks the details.
function parametersProblem(text) {
  let schema;
  try {
    schema = JSON.parse(text.trim() || JSON.stringify(NO_PARAMETERS));
  } catch (err) {
    return `Not valid JSON: ${err.message}`;
  }
  const isObject = schema && typeof schema === "object" && !Array.isArray(schema);
  return isObject && schema.type === "object"
    ? ""
    : 'The parameters must be a JSON Schema object: {"type": "object", "properties": {…}}.';
}

function readTools(list) {
  return [...list.children].map((row, index) => {
    const value = (name) => $(`[data-field="${name}"]`, row).value.trim();
    const invalid = (name, message) => new ApiError(0, "invalid_tool", message, `tools.${index}.${name}`);
    if (!TOOL_NAME.test(value("name"))) {
      throw invalid("name", "Use letters, digits and _ (not starting with a digit), at most 64.");
    }
    const problem = parametersProblem(value("parameters"));
    if (problem) throw invalid("parameters", problem);
    return {
      name: value("name"),
      description: value("description"),
      url: value("url"),
      parameters: JSON.parse(value("parameters") || JSON.stringify(NO_PARAMETERS)),
      timeout_seconds: Number(value("timeout_seconds")),
    };
  });
}

function showFieldError(row, name, message) {
  const box = $(`[data-error="${name}"]`, row);
  box.textContent = message;
  box.hidden = !message;
  const input = $(`[data-field="${name}"]`, row);
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

// Puts an error about a tool (the form's own or the API's: field "tools.<n>.<field>…") next
// to that field; errors about the list as a whole (such as duplicate names) under the list.
function showToolError(form, err) {
  for (const box of form.querySelectorAll(".field-error")) box.hidden = true;
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const match = err instanceof ApiError && /^tools(?:\.(\d+)\.(\w+))?/.exec(err.field || "");
  if (!match) return;
  const row = match[1] === undefined ? null : $("#tools-list", form).children[Number(match[1])];
  if (row && $(`[data-error="${match[2]}"]`, row)) {
    showFieldError(row, match[2], err.message.replace(`${err.field}: `, ""));
    $(`[data-field="${match[2]}"]`, row).focus();
  } else {
    $("#tools-error", form).textContent = err.message;
    $("#tools-error", form).hidden = false;
  }
}

function readAgentForm(form) {
  const values = formData(form);
  const tools = readTools($("#tools-list", form));
  return {
    name: values.name,
    instructions: values.instructions,
    greeting: values.greeting,
    voice: values.voice,
    language: values.language,
    max_session_seconds: Number(values.max_session_seconds),
    max_concurrent_calls: Number(values.max_concurrent_calls),
    allowed_origins: values.allowed_origins
      .split(/\s+/)
      .map((origin) => origin.trim().replace(/\/$/, ""))
      .filter(Boolean),
    tools,
  };
}

async function agentView(mount, id) {
  // Load before showing the form, so nothing typed can be overwritten by late data.
  let agent = id === "new" ? null : await api.agent(id);
  const view = mount("#tpl-agent");
  const form = $("#agent-form", view);
  const show = () => {
    $("#agent-title", view).textContent = agent ? agent.name : "New agent";
    if (!agent) return;
    fillAgentForm(form, agent);
    $("#agent-embed", view).hidden = false;
    $("#snippet", view).textContent = snippetFor(agent);
    $("#csp-https", view).textContent = location.origin;
    $("#csp-wss", view).textContent = `wss://${location.host}`;
    const allowed = agent.allowed_origins.includes(location.origin);
    $("#dashboard-origin", view).textContent = location.origin;
    $("#test-origin-hint", view).hidden = allowed;
  };
  show();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      showToolError(form, null);
      const body = readAgentForm(form);
      agent = agent ? await api.updateAgent(agent.id, body) : await api.createAgent(body);
      notify("Agent saved.", "info");
      if (location.hash !== `#/agents/${agent.id}`) {
        history.replaceState(null, "", `#/agents/${agent.id}`);
      }
      show();
    } catch (err) {
      report(err);
      showToolError(form, err);
    }
  });
  $("#add-tool", view).addEventListener("click", () => {
    $('[data-field="name"]', addTool($("#tools-list", form))).focus();
  });
  $("#copy-snippet", view).addEventListener("click", async () => {
    const text = $("#snippet", view).textContent;
    try {
      await navigator.clipboard.writeText(text);
      $("#copy-status", view).textContent = "Copied.";
    } catch {
      // No clipboard permission: select the text so Ctrl+C works.
      getSelection().selectAllChildren($("#snippet", view));
      $("#copy-status", view).textContent = "Press Ctrl+C to copy.";
    }
  });
  $("#allow-dashboard", view).addEventListener("click", async () => {
    try {
      agent = await api.updateAgent(agent.id, {
        allowed_origins: [...agent.allowed_origins, location.origin],
      });
      show();
    } catch (err) {
      report(err);
    }
  });
  $("#test-call", view).addEventListener("click", () => startTestWidget(agent));
}

// The live test call is the real widget, loaded exactly as a tenant's page loads it.
function removeTestWidget() {
  document.querySelectorAll("orbis-voice-widget, script[data-orbis-test]").forEach((el) => el.remove());
}

function startTestWidget(agent) {
  removeTestWidget();
  const script = document.createElement("script");
  script.src = "/widget.js";
  script.dataset.agent = agent.public_id;
  script.dataset.orbisTest = "true";
  document.body.append(script);
}

// --- transcripts --------------------------------------------------------------------------

async function transcriptsView(mount) {
  const agents = (await api.agents()).items;
  const view = mount("#tpl-transcripts");
  const form = $("#transcript-filter", view);
  const names = new Map(agents.map((agent) => [agent.id, agent.name]));
  for (const agent of agents) {
    const option = document.createElement("option");
    option.value = agent.id;
    option.textContent = agent.name;
    form.elements.agent_id.append(option);
  }
  const body = $("#sessions-body", view);
  const more = $("#sessions-more", view);
  let cursor = null;
  const load = async (append) => {
    // The API searches every transcript of the organisation (q) along with the other filters.
    const query = Object.fromEntries(Object.entries(formData(form)).filter(([, v]) => v.trim()));
    if (append && cursor) query.cursor = cursor;
    const page = await api.sessions(query);
    if (!append) body.replaceChildren();
    for (const call of page.items) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `#/transcripts/${call.id}`;
      link.textContent = when(call.started_at);
      cell(row, "").append(link);
      cell(row, names.get(call.agent_id) || call.agent_id);
      cell(row, call.origin);
      cell(row, seconds(call.duration_ms));
      cell(row, call.end_reason || (call.ended_at ? "" : "in progress"));
      cell(row, call.match); // the first line containing the searched words
      body.append(row);
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    $("#sessions-empty", view).hidden = body.children.length > 0;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(false).catch((err) => report(err));
  });
  more.addEventListener("click", () => load(true).catch((err) => report(err)));
  await load(false);
}

async function transcriptView(mount, id) {
  const call = await api.session(id);
  const view = mount("#tpl-transcript");
  const facts = $("#call-facts", view);
  const fact = (term, value) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    facts.append(dt, dd);
  };
  fact("Started", when(call.started_at));
  fact("Duration", seconds(call.duration_ms));
  fact("Origin", call.origin);
  fact("End-user id", call.end_user_id || "—");
  fact("Ended because", call.end_reason || "in progress");
  const list = $("#segments", view);
  for (const segment of call.transcript) {
    const item = document.createElement("li");
    item.dataset.role = segment.role;
    const who = document.createElement("span");
    who.className = "role";
    who.textContent = segment.role === "user" ? "Visitor" : "Agent";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = segment.text;
    item.append(who, text);
    list.append(item);
  }
  if (!call.transcript.length) {
    const item = document.createElement("li");
    item.textContent = "Nothing was said in this call.";
    list.append(item);
  }
}

// --- API keys -----------------------------------------------------------------------------

async function keysView(mount) {
  const view = mount("#tpl-keys");
  const body = $("#keys-body", view);
  const list = async () => {
    const { items } = await api.apiKeys();
    body.replaceChildren();
    for (const key of items) {
      const row = document.createElement("tr");
      cell(row, key.name);
      cell(row, `${key.prefix}…`).className = "mono";
      cell(row, when(key.created_at));
      cell(row, when(key.last_used_at));
      cell(row, key.revoked_at ? "revoked" : "active");
      const actions = cell(row, "");
      if (!key.revoked_at) {
        const revoke = document.createElement("button");
        revoke.type = "button";
        revoke.className = "danger";
        revoke.textContent = "Revoke";
        revoke.addEventListener("click", async () => {
          if (!confirm(`Revoke the key "${key.name}"? Anything using it stops working.`)) return;
          try {
            await api.revokeApiKey(key.id);
            await list();
          } catch (err) {
            report(err);
          }
        });
        actions.append(revoke);
      }
      body.append(row);
    }
  };
  $("#key-form", view).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api.createApiKey(formData(event.target));
      $("#new-key-value", view).textContent = created.key;
      $("#new-key", view).hidden = false;
      event.target.reset();
      await list();
    } catch (err) {
      report(err);
    }
  });
  await list();
}

// --- GDPR ---------------------------------------------------------------------------------

function privacyView(mount) {
  const view = mount("#tpl-privacy");
  const result = $("#privacy-result", view);
  $("#privacy-form", view).addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = event.target.elements.end_user_id.value.trim();
    const action = event.submitter && event.submitter.value;
    try {
      if (action === "erase") {
        if (!confirm(`Erase every call and transcript of "${id}"? This cannot be undone.`)) return;
        const erased = await api.eraseEndUser(id);
        result.textContent = `Erased ${plural(erased.sessions_erased, "call")} and ${plural(erased.segments_erased, "transcript line")} of ${erased.end_user_id}.`;
      } else {
        const data = await api.exportEndUser(id);
        const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = `orbisvoice-export-${id}.json`;
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 10000);
        result.textContent = `Exported ${plural(data.sessions.length, "call")} of ${data.end_user_id}.`;
      }
    } catch (err) {
      report(err);
    }
  });
}

// --- routing ------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/agents$/, (mount) => agentsView(mount)],
  [/^#\/agents\/([^/]+)$/, (mount, m) => agentView(mount, decodeURIComponent(m[1]))],
  [/^#\/transcripts$/, (mount) => transcriptsView(mount)],
  [/^#\/transcripts\/([^/]+)$/, (mount, m) => transcriptView(mount, decodeURIComponent(m[1]))],
  [/^#\/keys$/, (mount) => keysView(mount)],
  [/^#\/privacy$/, (mount) => privacyView(mount)],
];

async function render() {
  const hash = location.hash || "#/agents";
  const mount = mounter();
  if (!auth.get()) {
    await loginView(mount);
    return;
  }
  showChrome(true);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", hash.startsWith(link.getAttribute("href")));
  }
  const route = ROUTES.find(([pattern]) => pattern.test(hash));
  if (!route) {
    go("#/agents");
    return;
  }
  try {
    await route[1](mount, hash.match(route[0]));
  } catch (err) {
    report(err);
  }
}

window.addEventListener("hashchange", () => {
  notify(noticeForNextView, "info");
  noticeForNextView = "";
  render();
});
$("#logout").addEventListener("click", () => signOut(""));
render();
