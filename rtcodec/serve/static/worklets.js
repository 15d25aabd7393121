// Audio worklets of the rtcodec page: the microphone in blocks at 16 kHz, and a jitter buffer that plays the
// server's 16 kHz audio. Both resample (linear interpolation) only where the context does not run at 16 kHz.

const RATE = 16000;

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.block = options.processorOptions.block;
    this.step = sampleRate / RATE; // input samples per 16 kHz sample
    this.position = 0; // where the next 16 kHz sample falls in the input, relative to `previous`
    this.previous = 0;
    this.out = new Float32Array(this.block);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0][0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      // 16 kHz samples between the previous input sample and this one
      while (this.position < 1) {
        this.out[this.filled++] = this.previous + (input[i] - this.previous) * this.position;
        this.position += this.step;
        if (this.filled === this.block) {
          this.port.postMessage({ samples: this.out, time: currentTime + i / sampleRate });
          this.out = new Float32Array(this.block);
          this.filled = 0;
        }
      }
      this.position -= 1;
      this.previous = input[i];
    }
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = options.processorOptions.targetSamples; // buffered 16 kHz samples before playing starts
    this.step = RATE / sampleRate;
    this.queue = []; // [{samples, id}]
    this.offset = 0; // in the first chunk, fractional
    this.buffered = 0;
    this.playing = false;
    this.underruns = 0;
    this.port.onmessage = (event) => {
      this.queue.push(event.data);
      this.buffered += event.data.samples.length;
    };
  }

  process(_, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.buffered >= this.target) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (!this.playing || this.queue.length === 0) {
        if (this.playing) {
          this.playing = false; // ran dry: wait for the buffer to refill
          this.underruns++;
          this.port.postMessage({ underruns: this.underruns });
        }
        out[i] = 0;
        continue;
      }
      const chunk = this.queue[0];
      const k = Math.floor(this.offset);
      if (!chunk.announced) {
        chunk.announced = true;
        this.port.postMessage({ started: chunk.id, time: currentTime + i / sampleRate });
      }
      const a = chunk.samples[k];
      const b = k + 1 < chunk.samples.length ? chunk.samples[k + 1] : a;
      out[i] = a + (b - a) * (this.offset - k);
      this.offset += this.step;
      if (this.offset >= chunk.samples.length) {
        this.offset -= chunk.samples.length;
        this.buffered -= chunk.samples.length;
        this.queue.shift();
        if (this.offset > 0 && this.queue.length === 0) this.offset = 0;
      }
    }
    return true;
  }
}

registerProcessor("rtcodec-capture", Capture);
registerProcessor("rtcodec-playback", Playback);
