// OrbisVoice widget audio worklet: loaded by widget.js with audioWorklet.addModule().
// Two processors run on the audio rendering thread of the widget's AudioContext:
//   orbis-capture   microphone (context rate) -> 16 kHz PCM16 little-endian frames -> port
//   orbis-playback  port <- 24 kHz PCM16 little-endian chunks -> speakers (context rate)
// Both resample here rather than asking for a 16/24 kHz AudioContext, because browsers
// either refuse to connect a microphone to a context of a different rate or resample it
// with no anti-aliasing filter.
/* global sampleRate, registerProcessor, AudioWorkletProcessor */
"use strict";

// Windowed-sinc (Blackman) low-pass taps: cutoff is a fraction of the input rate.
function lowPassTaps(cutoff, count) {
  const taps = new Float32Array(count);
  const middle = (count - 1) / 2;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const x = i - middle;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const window =
      0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (count - 1)) +
      0.08 * Math.cos((4 * Math.PI * i) / (count - 1));
    taps[i] = sinc * window;
    sum += taps[i];
  }
  for (let i = 0; i < count; i++) taps[i] /= sum; // unity gain at DC
  return taps;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    const frameMs = opts.frameMs || 40;
    this.frameSamples = Math.round((this.targetRate * frameMs) / 1000);
    this.step = sampleRate / this.targetRate; // input samples per output sample
    // Keep content below 0.45 x the output rate so nothing folds back into the speech band.
    const cutoff = Math.min(0.5, (0.45 * this.targetRate) / sampleRate);
    this.taps = this.step > 1 ? lowPassTaps(cutoff, 63) : new Float32Array([1]);
    this.history = new Float32Array(this.taps.length * 2); // doubled ring: contiguous reads
    this.historyPos = 0;
    this.previous = 0; // filtered sample before the current one
    this.nextAt = 1; // next output position, in input samples after `previous`
    this.newFrame();
  }

  newFrame() {
    this.frame = new ArrayBuffer(this.frameSamples * 2);
    this.frameView = new DataView(this.frame);
    this.frameFill = 0;
  }

  filter(sample) {
    const n = this.taps.length;
    this.history[this.historyPos] = sample;
    this.history[this.historyPos + n] = sample;
    this.historyPos = (this.historyPos + 1) % n;
    let acc = 0;
    for (let k = 0; k < n; k++) acc += this.taps[k] * this.history[this.historyPos + k];
    return acc;
  }

  emit(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.frameView.setInt16(this.frameFill * 2, Math.round(clamped * 32767), true);
    this.frameFill += 1;
    if (this.frameFill === this.frameSamples) {
      this.port.postMessage(this.frame, [this.frame]);
      this.newFrame();
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // microphone not delivering yet
    for (let i = 0; i < channel.length; i++) {
      const current = this.filter(channel[i]);
      while (this.nextAt <= 1) {
        this.emit(this.previous + this.nextAt * (current - this.previous));
        this.nextAt += this.step;
      }
      this.nextAt -= 1;
      this.previous = current;
    }
    return true;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.step = (opts.sourceRate || 24000) / sampleRate; // source samples per output sample
    // Wait for ~60 ms of audio after silence so network jitter does not chop the first words.
    this.prebuffer = Math.round((opts.sourceRate || 24000) * 0.06);
    this.chunks = [];
    this.chunkPos = 0;
    this.queued = 0;
    this.started = false;
    this.waitedQuanta = 0;
    this.prev = 0;
    this.next = 0;
    this.frac = 0;
    this.played = 0; // source samples rendered since the node was created
    this.quantaSinceReport = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(data) {
    if (data instanceof ArrayBuffer) {
      const view = new DataView(data);
      const samples = new Float32Array(data.byteLength >> 1);
      for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
      this.chunks.push(samples);
      this.queued += samples.length;
    } else if (data && data.type === "flush") {
      const dropped = this.queued;
      this.chunks = [];
      this.chunkPos = 0;
      this.queued = 0;
      this.started = false;
      this.waitedQuanta = 0;
      this.prev = 0;
      this.next = 0;
      this.port.postMessage({ type: "flushed", dropped, played: this.played });
    }
  }

  shift() {
    const chunk = this.chunks[0];
    const value = chunk[this.chunkPos++];
    if (this.chunkPos === chunk.length) {
      this.chunks.shift();
      this.chunkPos = 0;
    }
    this.queued -= 1;
    this.played += 1;
    return value;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.started && this.queued > 0) {
      this.waitedQuanta += 1;
      // Start once the prebuffer is full, or after ~50 ms for a short last piece of a turn.
      this.started = this.queued >= this.prebuffer || this.waitedQuanta * 128 > sampleRate / 20;
    }
    for (let i = 0; i < out.length; i++) {
      if (!this.started) {
        out[i] = 0;
        continue;
      }
      while (this.frac >= 1 && this.queued > 0) {
        this.prev = this.next;
        this.next = this.shift();
        this.frac -= 1;
      }
      if (this.frac >= 1) {
        // Ran dry: go quiet and wait for the next prebuffer.
        this.started = false;
        this.waitedQuanta = 0;
        out[i] = 0;
        continue;
      }
      out[i] = this.prev + this.frac * (this.next - this.prev);
      this.frac += this.step;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.quantaSinceReport += 1;
    if (this.quantaSinceReport * 128 >= sampleRate / 10) {
      this.quantaSinceReport = 0;
      this.port.postMessage({ type: "played", played: this.played, queued: this.queued });
    }
    return true;
  }
}

registerProcessor("orbis-capture", CaptureProcessor);
registerProcessor("orbis-playback", PlaybackProcessor);
