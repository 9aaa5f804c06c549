// Test harness for runtime/web/widget-audio.js: the tests call these from page.evaluate().
"use strict";

function waitFor(check, timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const poll = () => {
      const value = check();
      if (value) resolve(value);
      else if (performance.now() - started > timeoutMs) reject(new Error("timed out"));
      else setTimeout(poll, 10);
    };
    poll();
  });
}

// Renders `seconds` of a sine tone at `rate` through orbis-capture; returns the PCM16 bytes.
window.captureTone = async ({ workletUrl, rate, frequency, amplitude, seconds }) => {
  const ctx = new OfflineAudioContext(1, Math.round(rate * seconds), rate);
  await ctx.audioWorklet.addModule(workletUrl);
  const tone = new OscillatorNode(ctx, { frequency });
  const gain = new GainNode(ctx, { gain: amplitude });
  const capture = new AudioWorkletNode(ctx, "orbis-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { targetRate: 16000, frameMs: 40 },
  });
  const frames = [];
  capture.port.onmessage = (event) => frames.push(new Uint8Array(event.data));
  tone.connect(gain).connect(capture).connect(ctx.destination);
  tone.start();
  await ctx.startRendering();
  // Port messages trail the rendering; every whole 40 ms frame must arrive.
  const expected = Math.floor((seconds * 16000) / 640);
  await waitFor(() => frames.length >= expected, 5000);
  return { frameSizes: frames.map((f) => f.length), bytes: frames.flatMap((f) => Array.from(f)) };
};

function level(analyser) {
  const data = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(data);
  return Math.sqrt(data.reduce((sum, x) => sum + x * x, 0) / data.length);
}

// Queues 2 s of a 24 kHz tone on orbis-playback, flushes it mid-way, reports what was heard.
window.playbackFlush = async ({ workletUrl }) => {
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule(workletUrl);
  await ctx.resume();
  const playback = new AudioWorkletNode(ctx, "orbis-playback", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { sourceRate: 24000 },
  });
  const analyser = new AnalyserNode(ctx, { fftSize: 2048 });
  playback.connect(analyser).connect(ctx.destination);
  const reports = [];
  playback.port.onmessage = (event) => reports.push(event.data);
  const total = 48000;
  for (let start = 0; start < total; start += 2400) {
    const chunk = new ArrayBuffer(2400 * 2);
    const view = new DataView(chunk);
    for (let i = 0; i < 2400; i++) {
      const value = 0.5 * Math.sin((2 * Math.PI * 440 * (start + i)) / 24000);
      view.setInt16(i * 2, Math.round(value * 32767), true);
    }
    playback.port.postMessage(chunk, [chunk]);
  }
  await waitFor(() => reports.some((r) => r.played >= 7200), 5000);
  const levelWhilePlaying = level(analyser);
  playback.port.postMessage({ type: "flush" });
  const flushed = await waitFor(() => reports.find((r) => r.type === "flushed"), 2000);
  const at = reports.indexOf(flushed);
  await waitFor(() => reports.length >= at + 4, 2000);
  const last = reports[reports.length - 1];
  const result = {
    sampleRate: ctx.sampleRate,
    total,
    levelWhilePlaying,
    levelAfterFlush: level(analyser),
    flushed,
    last,
  };
  await ctx.close();
  return result;
};
