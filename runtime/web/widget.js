// OrbisVoice embeddable voice widget.
//   <script src="https://voice.example.com/widget.js" data-agent="PUBLIC_ID" async></script>
// Optional data-user="ID": the site's id for the visitor (for GDPR export/erasure).
// Everything (API, gateway, audio worklet) is reached through the origin this script was
// loaded from; the page's own origin is what the API checks against the agent's allowed
// origins. No globals are defined: the widget lives in a Shadow DOM under one host element,
// and reports its state for tests and host pages as data-orbis-* attributes on that element.
(() => {
  "use strict";

  const script = document.currentScript;
  if (!script || !script.src || !script.dataset.agent) {
    console.error("OrbisVoice: widget.js needs data-agent=\"PUBLIC_ID\" on its <script> tag");
    return;
  }
  const scriptUrl = new URL(script.src, document.baseURI);
  const agentId = script.dataset.agent;
  const endUserId = script.dataset.user || "";
  const agentUrl = `${scriptUrl.origin}/api/v1/widget/agents/${encodeURIComponent(agentId)}`;
  const workletUrl = new URL("widget-audio.js", scriptUrl).href;

  const INPUT_RATE = 16000;
  const OUTPUT_RATE = 24000;
  const FRAME_MS = 40;
  const MAX_RETRIES = 3;
  const PING_MS = 20000;
  const MAX_CAPTIONS = 8;

  // Final states: each has its message; the call is over until the visitor retries.
  const MESSAGES = {
    idle: "Tap to talk",
    connecting: "Connecting…",
    live: "Listening — go ahead and speak",
    reconnecting: "Connection interrupted — reconnecting…",
    "back-soon": "Back in a moment — waiting for the service…",
    ended: "Call ended",
    "mic-denied": "Microphone access was blocked. Allow the microphone for this site and try again.",
    "mic-missing": "No microphone was found on this device.",
    "origin-not-allowed": "This voice agent is not enabled on this website.",
    "limit-reached": "All lines are busy right now. Please try again in a few minutes.",
    "network-lost": "The connection was lost. Check your network and try again.",
    unavailable: "This voice agent is not available.",
    down: "The service is unavailable. Please try again in a minute.",
    unsupported: "This browser cannot make voice calls (it needs microphone and AudioWorklet support).",
    error: "Something went wrong. Please try again.",
  };
  const ACTIVE = new Set(["connecting", "live", "reconnecting", "back-soon"]);

  // API and gateway error codes (docs/protocol.md) the visitor gets a specific state for;
  // any other code ends the call with the generic "error" state.
  const CODE_STATES = {
    origin_not_allowed: "origin-not-allowed",
    call_limit_reached: "limit-reached",
    server_busy: "limit-reached",
    rate_limited: "limit-reached",
    not_found: "unavailable",
    unavailable: "down",
    idle_timeout: "ended",
    max_duration: "ended",
  };
  // Reported by the gateway while the call goes on.
  const NON_FATAL = new Set(["unknown_event", "not_ready"]);
  const stateForCode = (code) => CODE_STATES[code] || "error";

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function errorCode(response) {
    try {
      const body = await response.json();
      const err = body && body.error;
      return (err && (err.code || (typeof err === "string" && err))) || body.code || "";
    } catch {
      return "";
    }
  }

  class CallError extends Error {
    constructor(state, code) {
      super(code || state);
      this.state = state;
      this.code = code || state;
    }
  }

  const CSS = `
:host { all: initial; }
* { box-sizing: border-box; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483647; width: 60px; height: 60px;
  border-radius: 50%; border: 0; background: #1f5eff; color: #fff; cursor: pointer;
  box-shadow: 0 4px 16px rgba(0,0,0,.25); display: grid; place-items: center; }
.launcher:focus-visible, button:focus-visible { outline: 3px solid #ffbf47; outline-offset: 2px; }
.launcher[data-active="true"] { background: #d93a3a; }
.launcher svg { width: 28px; height: 28px; fill: currentColor; }
.panel { position: fixed; right: 20px; bottom: 92px; z-index: 2147483647; width: 320px; max-width: calc(100vw - 40px);
  background: #fff; color: #1b1d21; border-radius: 14px; box-shadow: 0 8px 30px rgba(0,0,0,.25);
  padding: 14px 16px; font-size: 14px; line-height: 1.4; }
.panel[hidden] { display: none; }
.head { display: flex; align-items: center; justify-content: space-between; gap: 8px; }
.name { font-weight: 600; font-size: 15px; }
.close { border: 0; background: none; font-size: 20px; line-height: 1; cursor: pointer; color: #555; padding: 2px 6px; }
.status { margin: 8px 0; color: #444; }
.status[data-kind="problem"] { color: #a32020; font-weight: 500; }
.captions { list-style: none; margin: 0 0 10px; padding: 0; max-height: 180px; overflow-y: auto; }
.captions li { margin: 4px 0; padding: 6px 9px; border-radius: 10px; background: #f0f2f5; }
.captions li[data-role="user"] { background: #e3ecff; margin-left: 28px; }
.captions li[data-final="false"] { opacity: .7; }
.action { width: 100%; border: 0; border-radius: 9px; padding: 10px; font-size: 14px; font-weight: 600;
  cursor: pointer; background: #1f5eff; color: #fff; }
.action[data-kind="hangup"] { background: #d93a3a; }
`;
  const MIC_PATH =
    "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z";

  class Widget {
    constructor() {
      this.host = document.createElement("orbis-voice-widget");
      this.host.dataset.orbisWidget = agentId;
      this.shadow = this.host.attachShadow({ mode: "open" });
      this.agentName = "Voice assistant";
      this.state = "";
      this.counters = { sent: 0, received: 0, played: 0, flushed: 0 };
      this.retries = 0;
      this.captions = [];
      this.openLines = {};
      this.ctx = null;
      this.ws = null;
      this.render();
      this.setState("idle");
      this.loadConfig();
    }

    render() {
      // Constructed stylesheets are not inline styles, so a strict host-page CSP allows them.
      if ("adoptedStyleSheets" in Document.prototype && "replaceSync" in CSSStyleSheet.prototype) {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        this.shadow.adoptedStyleSheets = [sheet];
      } else {
        const style = document.createElement("style");
        style.textContent = CSS;
        this.shadow.append(style);
      }
      // Built node by node: pages enforcing Trusted Types refuse innerHTML.
      const make = (tag, className, attributes = {}) => {
        const element = document.createElement(tag);
        if (className) element.className = className;
        for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
        return element;
      };
      const panel = make("div", "panel", { role: "dialog", "aria-label": "Voice call", hidden: "" });
      const head = make("div", "head");
      const close = make("button", "close", { type: "button", "aria-label": "Minimise" });
      close.textContent = "×";
      head.append(make("span", "name"), close);
      panel.append(
        head,
        make("p", "status", { role: "status", "aria-live": "polite" }),
        make("ul", "captions", { "aria-live": "polite", "aria-label": "Live captions" }),
        make("button", "action", { type: "button" }),
      );
      const launcher = make("button", "launcher", { type: "button", "aria-haspopup": "dialog" });
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", "0 0 24 24");
      svg.setAttribute("aria-hidden", "true");
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", MIC_PATH);
      svg.append(path);
      launcher.append(svg);
      this.shadow.append(panel, launcher);
      const $ = (sel) => this.shadow.querySelector(sel);
      this.el = {
        panel: $(".panel"),
        name: $(".name"),
        status: $(".status"),
        captions: $(".captions"),
        action: $(".action"),
        launcher: $(".launcher"),
      };
      this.el.launcher.addEventListener("click", () => {
        this.el.panel.hidden = false;
        if (!ACTIVE.has(this.state)) this.start();
      });
      this.el.action.addEventListener("click", () => {
        if (ACTIVE.has(this.state)) this.hangUp();
        else this.start();
      });
      const minimise = () => {
        this.el.panel.hidden = true; // the call, if any, goes on
        this.el.launcher.focus();
      };
      $(".close").addEventListener("click", minimise);
      this.el.panel.addEventListener("keydown", (event) => {
        if (event.key === "Escape") minimise();
      });
      this.showName();
    }

    showName() {
      this.el.name.textContent = this.agentName;
      this.el.launcher.setAttribute("aria-label", `Talk to ${this.agentName}`);
    }

    async loadConfig() {
      try {
        const response = await fetch(agentUrl, { credentials: "omit" });
        if (response.ok) {
          const config = await response.json();
          this.agentName = config.name || this.agentName;
          this.showName();
          this.host.dataset.orbisConfig = "loaded";
        } else {
          this.host.dataset.orbisConfig = `http-${response.status}`;
        }
      } catch {
        // A site that is not an allowed origin gets no CORS headers here; the session
        // request tells the visitor why when they press the button.
        this.host.dataset.orbisConfig = "failed";
      }
    }

    setState(state, code) {
      this.state = state;
      this.host.dataset.orbisState = state;
      if (code) this.host.dataset.orbisError = code;
      else delete this.host.dataset.orbisError;
      const problem = !ACTIVE.has(state) && state !== "idle" && state !== "ended";
      this.el.status.textContent = MESSAGES[state] || MESSAGES.error;
      this.el.status.dataset.kind = problem ? "problem" : "info";
      const active = ACTIVE.has(state);
      this.el.action.textContent = active ? "End call" : state === "idle" ? "Start call" : "Call again";
      this.el.action.dataset.kind = active ? "hangup" : "call";
      this.el.launcher.dataset.active = String(active);
    }

    // Per-call byte counters, shown as data-orbis-bytes-* (tests, debugging).
    setCounter(name, value) {
      this.counters[name] = value;
      this.host.dataset[`orbisBytes${name[0].toUpperCase()}${name.slice(1)}`] = String(value);
    }

    count(name, amount) {
      this.setCounter(name, this.counters[name] + amount);
    }

    // --- call lifecycle

    async start() {
      if (ACTIVE.has(this.state)) return;
      this.clearCaptions();
      for (const name of Object.keys(this.counters)) this.setCounter(name, 0);
      this.ended = false;
      this.retries = 0;
      this.setState("connecting");
      try {
        await this.openAudio();
        // Hung up while the browser was asking for the microphone: let it go again.
        if (this.ended) {
          this.releaseAudio();
          return;
        }
        await this.connect();
      } catch (err) {
        if (this.ended) this.releaseAudio();
        else this.fail(err);
      }
    }

    async openAudio() {
      if (!navigator.mediaDevices || !window.AudioWorkletNode) {
        throw new CallError("unsupported");
      }
      let stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
      } catch (err) {
        if (err && (err.name === "NotFoundError" || err.name === "OverconstrainedError")) {
          throw new CallError("mic-missing");
        }
        throw new CallError("mic-denied");
      }
      this.stream = stream;
      const ctx = new AudioContext({ latencyHint: "interactive" });
      this.ctx = ctx;
      await ctx.audioWorklet.addModule(workletUrl);
      await ctx.resume();
      this.capture = new AudioWorkletNode(ctx, "orbis-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: INPUT_RATE, frameMs: FRAME_MS },
      });
      this.capture.port.onmessage = (event) => this.sendAudio(event.data);
      // The capture node only runs while pulled by the destination; a muted gain keeps it
      // pulled without echoing the visitor's own voice.
      const mute = new GainNode(ctx, { gain: 0 });
      ctx.createMediaStreamSource(stream).connect(this.capture).connect(mute).connect(ctx.destination);
      this.playback = new AudioWorkletNode(ctx, "orbis-playback", {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { sourceRate: OUTPUT_RATE },
      });
      this.playback.port.onmessage = (event) => this.playbackReport(event.data);
      this.playback.connect(ctx.destination);
    }

    // null: the visitor hung up meanwhile.
    async newSession(tries = 1) {
      let response;
      // A CORS "simple request" (text/plain, no custom headers) needs no preflight, so a
      // refused origin still reads why (the API checks Origin; it parses the body as JSON).
      const init = { method: "POST", credentials: "omit" };
      if (endUserId) {
        init.headers = { "Content-Type": "text/plain;charset=UTF-8" };
        init.body = JSON.stringify({ end_user_id: endUserId });
      }
      try {
        response = await fetch(`${agentUrl}/sessions`, init);
      } catch {
        // Browsers abort requests when the network changes; one more try is harmless.
        try {
          await sleep(300);
          response = await fetch(`${agentUrl}/sessions`, init);
        } catch {
          throw new CallError("network-lost");
        }
      }
      // Maintenance or a restart: wait as Retry-After asks, ask again.
      if (response.status === 503 && tries < 8) {
        this.setState("back-soon");
        await sleep(Math.min(Number(response.headers.get("Retry-After")) || 1, 10) * 1e3);
        if (this.ended) return null;
        this.setState("connecting");
        return this.newSession(tries + 1);
      }
      if (response.status === 201) return response.json();
      const code = await errorCode(response);
      if (response.status === 403) throw new CallError("origin-not-allowed", code || "origin_not_allowed");
      if (response.status === 404) throw new CallError("unavailable", code || "not_found");
      if (response.status === 429) throw new CallError("limit-reached", code || "rate_limited");
      throw new CallError(code ? stateForCode(code) : "error", code || `http_${response.status}`);
    }

    async connect() {
      const session = await this.newSession();
      if (this.ended || !session) return; // hung up while waiting
      this.gatewayUrl = session.gateway_url;
      const url = new URL(session.gateway_url);
      url.searchParams.set("token", session.token);
      this.openSocket(url);
    }

    openSocket(url) {
      const ws = new WebSocket(url.href);
      ws.binaryType = "arraybuffer";
      this.opened = false;
      ws.onopen = () => {
        if (ws === this.ws) this.opened = true;
      };
      this.ws = ws;
      this.live = false;
      this.terminal = null;
      this.sessionEnded = null;
      ws.onmessage = (event) => {
        if (ws !== this.ws) return;
        if (typeof event.data === "string") this.onEvent(event.data);
        else this.onAudio(event.data);
      };
      ws.onclose = () => {
        if (ws === this.ws) this.onClose();
      };
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.sendJson({ type: "ping" }), PING_MS);
    }

    sendJson(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    sendAudio(frame) {
      if (this.live && this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(frame);
        this.count("sent", frame.byteLength);
      }
    }

    onAudio(buffer) {
      this.count("received", buffer.byteLength);
      if (this.playback) this.playback.port.postMessage(buffer, [buffer]);
    }

    playbackReport(report) {
      // The worklet reports a running total of 24 kHz samples it has sent to the speakers.
      this.setCounter("played", report.played * 2);
      if (report.type === "flushed") this.count("flushed", report.dropped * 2);
    }

    onEvent(text) {
      let event;
      try {
        event = JSON.parse(text);
      } catch {
        return;
      }
      switch (event.type) {
        case "session.started":
          this.live = true;
          this.retries = 0;
          // A moved call runs on the new socket now: let go of the draining one.
          this.resuming = false;
          this.dropPrevious();
          this.host.dataset.orbisCallId = event.call_id || "";
          this.setState("live");
          break;
        case "transcript":
          this.caption(event.role, event.text || "", event.final === true);
          break;
        case "interrupted":
          // The visitor talked over the agent: drop everything queued, at once.
          if (this.playback) this.playback.port.postMessage({ type: "flush" });
          this.host.dataset.orbisInterruptions = String(
            Number(this.host.dataset.orbisInterruptions || 0) + 1,
          );
          break;
        case "turn.complete":
          this.finishCaptions();
          break;
        case "error":
          if (!NON_FATAL.has(event.code)) {
            this.terminal = { state: stateForCode(event.code || ""), code: event.code || "error" };
          }
          break;
        case "reconnect": {
          // This gateway is draining: move the call with its resume token (the model keeps
          // the conversation), else start a fresh session.
          const token = typeof event.resume_token === "string" ? event.resume_token : "";
          this.setState("reconnecting");
          this.finishCaptions(); // the turn in progress was stored as it stood
          clearTimeout(this.reconnectTimer);
          this.reconnectTimer = setTimeout(
            () => (token && this.gatewayUrl ? this.resumeCall(token) : this.moveCall()),
            Math.min(Math.max(Number(event.retry_after_ms) || 0, 0), 10000),
          );
          break;
        }
        case "session.ended":
          this.sessionEnded = event.reason || "ended";
          this.host.dataset.orbisEndReason = this.sessionEnded;
          break;
        default:
          break; // pong, tool activity: nothing to show
      }
    }

    onClose() {
      this.live = false;
      this.ws = null;
      clearInterval(this.pinger);
      if (this.ended) return;
      if (this.resuming && !this.opened && this.resumeTries < MAX_RETRIES) {
        // Refused before the upgrade: likely the load balancer picked the draining instance
        // (503 server_busy, token unused); another try lands elsewhere.
        this.resumeTries += 1;
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => this.openResume(), 250 * 2 ** this.resumeTries);
      } else if (this.resuming || this.sessionEnded === "drain") {
        // The move failed, or the draining gateway ended the call first: start afresh.
        this.resuming = false;
        this.dropPrevious();
        this.setState("reconnecting");
        this.scheduleReconnect(0);
      } else if (this.terminal) {
        this.fail(new CallError(this.terminal.state, this.terminal.code));
      } else if (this.sessionEnded) {
        this.finish("ended");
      } else if (this.retries < MAX_RETRIES) {
        this.retries += 1;
        this.setState("reconnecting");
        this.scheduleReconnect(500 * 2 ** this.retries);
      } else {
        this.fail(new CallError("network-lost"));
      }
    }

    // The same call on another instance; the draining socket stays open until it has started.
    resumeCall(token) {
      if (!this.ws || this.ended) return;
      this.live = false; // the draining instance drops caller audio
      this.previous = this.ws;
      this.resuming = true;
      this.resumeToken = token;
      this.resumeTries = 0;
      this.openResume();
    }

    openResume() {
      if (this.ended) return;
      const url = new URL(this.gatewayUrl);
      url.searchParams.set("resume", this.resumeToken);
      this.openSocket(url);
    }

    dropPrevious() {
      const old = this.previous;
      this.previous = null;
      if (!old) return;
      if (old.readyState === WebSocket.OPEN) old.send(JSON.stringify({ type: "end" }));
      old.close(1000);
    }

    // Hangs up the current socket (its close is then ignored) and connects afresh.
    moveCall() {
      if (!this.ws || this.ended) return;
      this.previous = this.ws;
      this.ws = null;
      this.live = false;
      clearInterval(this.pinger);
      this.dropPrevious();
      this.scheduleReconnect(0);
    }

    scheduleReconnect(delayMs) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(async () => {
        if (this.ended) return;
        try {
          await this.connect();
        } catch (err) {
          if (err instanceof CallError && err.state === "network-lost" && this.retries < MAX_RETRIES) {
            this.retries += 1;
            this.scheduleReconnect(500 * 2 ** this.retries);
          } else {
            this.fail(err);
          }
        }
      }, delayMs);
    }

    hangUp() {
      this.sendJson({ type: "end" });
      this.finish("ended");
    }

    fail(err) {
      const state = err instanceof CallError ? err.state : "error";
      if (!(err instanceof CallError)) console.error("OrbisVoice:", err);
      this.finish(state, err instanceof CallError ? err.code : "error");
    }

    finish(state, code) {
      this.ended = true;
      this.live = false;
      clearTimeout(this.reconnectTimer);
      clearInterval(this.pinger);
      this.resuming = false;
      this.dropPrevious();
      const ws = this.ws;
      this.ws = null;
      // Let the gateway see "end" before the socket goes; it ends the call either way.
      if (ws) setTimeout(() => ws.close(1000), ws.readyState === WebSocket.OPEN ? 250 : 0);
      this.releaseAudio();
      this.finishCaptions();
      this.setState(state, code);
    }

    releaseAudio() {
      if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
      this.stream = null;
      const ctx = this.ctx;
      this.ctx = null;
      this.capture = null;
      this.playback = null;
      if (ctx) ctx.close();
    }

    // --- captions

    // `transcript` events carry a speaker's text of the current turn so far (final: true once
    // the turn is complete); each speaker's turn is one caption line, updated in place.
    caption(role, text, final) {
      let line = this.openLines[role];
      if (!line) {
        if (!text.trim()) return;
        const li = document.createElement("li");
        li.dataset.role = role;
        this.el.captions.append(li);
        line = { role, li };
        this.captions.push(line);
        this.openLines[role] = line;
        while (this.captions.length > MAX_CAPTIONS) this.captions.shift().li.remove();
      }
      line.li.textContent = text;
      line.li.dataset.final = String(final);
      if (final) delete this.openLines[role];
      this.el.captions.scrollTop = this.el.captions.scrollHeight;
      this.host.dataset.orbisCaptions = String(this.captions.length);
    }

    finishCaptions() {
      for (const line of Object.values(this.openLines)) line.li.dataset.final = "true";
      this.openLines = {};
    }

    clearCaptions() {
      this.captions = [];
      this.openLines = {};
      this.el.captions.replaceChildren();
      this.host.dataset.orbisCaptions = "0";
    }
  }

  const mount = () => document.body.append(new Widget().host);
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
