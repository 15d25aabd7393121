// The rtcodec page: microphone -> 16 kHz blocks over a WebSocket -> the server's audio -> a jitter buffer.
// The protocol is documented in rtcodec/serve/protocol.py and the README.

const VERSION = 1, AUDIO = 1, REFERENCE = 2, SILENCE = 0xffffffff;
const $ = (id) => document.getElementById(id);

// What the tests read: every block sent and every message received, in order.
const exposed = (window.rtcodec = { sent: [], received: [], consumed: [], stats: null, ready: null, closed: null });

let call = null;

function header(type, seq, payloadBytes) {
  const buffer = new ArrayBuffer(6 + payloadBytes);
  const view = new DataView(buffer);
  view.setUint8(0, VERSION);
  view.setUint8(1, type);
  view.setUint32(2, seq);
  return buffer;
}

function drawLevel(canvas, rms) {
  const g = canvas.getContext("2d");
  const db = 20 * Math.log10(rms + 1e-9);
  const width = Math.max(0, Math.min(1, (db + 60) / 60)) * canvas.width;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = db > -6 ? "#d64545" : "#2f9e5b";
  g.fillRect(0, 0, width, canvas.height);
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1).replace(/\.0$/, "")} MB`;
}

// Why a call closed, where the server gave no reason (1006: the connection broke without a close).
const CLOSE_MEANINGS = {
  1001: "The server is shutting down.",
  1006: "The connection to the server was lost. Press Start to call again.",
  1008: "The server refused the call.",
  1009: "A message was too large for the server.",
  1011: "The server failed on this call.",
  1013: "The server is busy: try again in a moment.",
};

function rms(samples) {
  let sum = 0;
  for (const x of samples) sum += x * x;
  return Math.sqrt(sum / Math.max(1, samples.length));
}

let info = null;

async function loadInfo() {
  info = await (await fetch("info")).json();
  $("upload-limit").textContent = megabytes(info.max_reference_bytes);
  for (const name of info.voices) $("voice").add(new Option(name, name));
  $("voice").add(new Option("Upload a clip…", "upload"));
  for (const name of info.latencies) $("latency").add(new Option(name, name));
}

async function start() {
  $("start").disabled = true;
  $("status").textContent = "Starting the microphone…";
  const settings = { version: VERSION, mode: $("mode").value, voice: $("voice").value, latency: $("latency").value };
  let reference = null;
  if (settings.voice === "upload") {
    const file = $("upload").files[0];
    if (!file) {
      $("status").textContent = "Choose a reference clip to upload first.";
      $("start").disabled = false;
      return;
    }
    if (info && file.size > info.max_reference_bytes) {
      $("status").textContent =
        `${file.name} is ${megabytes(file.size)}; the server takes reference clips of at most ` +
        `${megabytes(info.max_reference_bytes)} (a few seconds of speech: trim it, or save it as FLAC or MP3).`;
      $("start").disabled = false;
      return;
    }
    reference = await file.arrayBuffer();
  }
  let context, microphone;
  try {
    microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    try {
      context = new AudioContext({ sampleRate: 16000, latencyHint: "interactive" });
      await context.audioWorklet.addModule("worklets.js");
      context.createMediaStreamSource(microphone); // some browsers refuse a source at another rate: try it now
    } catch (err) {
      context = new AudioContext({ latencyHint: "interactive" });
      await context.audioWorklet.addModule("worklets.js");
    }
  } catch (err) {
    $("status").textContent = `No microphone: ${err.message}`;
    $("start").disabled = false;
    return;
  }
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  call = { ws, context, microphone, captureEnd: [], outputs: 0, outputStarts: [], consumed: [], gaps: 0, seq: 0 };
  ws.onopen = () => {
    ws.send(JSON.stringify(settings));
    if (reference) {
      const buffer = header(REFERENCE, 0, reference.byteLength);
      new Uint8Array(buffer, 6).set(new Uint8Array(reference));
      ws.send(buffer);
    }
    $("status").textContent = "Connecting…";
  };
  ws.onmessage = (event) => (typeof event.data === "string" ? onText(JSON.parse(event.data)) : onAudio(event.data));
  ws.onclose = (event) => {
    exposed.closed = { code: event.code, reason: event.reason };
    let message = event.reason
      ? `The server ended the call: ${event.reason}`
      : CLOSE_MEANINGS[event.code] || `The server ended the call (code ${event.code}).`;
    if (event.code === 1000 || event.code === 1005) message = "Stopped.";
    if (call && call.ws === ws) stop(message);
  };
  $("stop").disabled = false;
}

function onText(message) {
  if (message.type === "ready") {
    exposed.ready = message;
    call.ready = message;
    startAudio(message);
    const ms = (1000 * message.latency_samples) / message.sample_rate;
    $("algorithmic").textContent = `${ms.toFixed(0)} ms`;
    $("bitrate").textContent =
      message.mode === "codec" ? "4.8 kbit/s (6 codes of 10 bits, 80 frames/s)" : "2.4 kbit/s of prosody and content codes (the voice comes from the target)";
    $("status").textContent = `Live (slot ${message.slot}). Speak!`;
    $("status").classList.remove("warning");
  } else if (message.type === "stats") {
    exposed.stats = message;
    $("compute").textContent = `${message.compute_ms_p50.toFixed(1)} ms median, ${message.compute_ms_p99.toFixed(1)} ms p99`;
    $("late").textContent = `${message.late_blocks} / ${message.dropped_blocks}`;
    $("callers").textContent = `${message.active} of ${message.slots} slots`;
    $("delay").textContent = `${message.delay_ms.toFixed(0)} ms`;
    const status = $("status");
    if (message.overloaded) {
      status.textContent =
        "The server cannot keep up: your audio arrives late and breaks up. Its operator can give it larger blocks " +
        "(rtcodec serve --hops-per-tick), fewer slots, or a GPU.";
      status.classList.add("warning");
    } else if (status.classList.contains("warning")) {
      status.textContent = `Live (slot ${call.ready.slot}). Speak!`;
      status.classList.remove("warning");
    }
  }
}

function startAudio(ready) {
  const { context, microphone, ws } = call;
  const source = context.createMediaStreamSource(microphone);
  const capture = new AudioWorkletNode(context, "rtcodec-capture", { processorOptions: { block: ready.block } });
  capture.port.onmessage = ({ data }) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const pcm = new Int16Array(data.samples.length);
    for (let i = 0; i < pcm.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(data.samples[i] * 32768)));
    const buffer = header(AUDIO, call.seq, pcm.byteLength);
    new Int16Array(buffer, 6).set(pcm); // little-endian on every platform browsers run on
    ws.send(buffer);
    call.captureEnd[call.seq] = data.time;
    exposed.sent.push(pcm);
    call.seq++;
    drawLevel($("level-in"), rms(data.samples));
  };
  source.connect(capture);
  const playback = new AudioWorkletNode(context, "rtcodec-playback", {
    processorOptions: { targetSamples: 2 * ready.block },
    outputChannelCount: [1],
  });
  playback.port.onmessage = ({ data }) => {
    if (data.underruns !== undefined) $("gaps").textContent = `${(call.gaps = data.underruns)}`;
    if (data.started !== undefined) measureRoundTrip(data.started, data.time);
  };
  playback.connect(context.destination);
  call.playback = playback;
  call.capture = capture;
  call.source = source;
}

function onAudio(buffer) {
  const view = new DataView(buffer);
  const consumed = view.getUint32(6);
  const pcm = new Int16Array(buffer.slice(10));
  const samples = Float32Array.from(pcm, (x) => x / 32768);
  exposed.received.push(pcm);
  exposed.consumed.push(consumed);
  call.consumed.push(consumed);
  call.outputStarts.push(call.outputs);
  const id = call.outputStarts.length - 1;
  call.outputs += samples.length;
  if (samples.length) call.playback.port.postMessage({ samples, id });
  drawLevel($("level-out"), rms(samples));
}

// Output sample i is the stream's input sample i; the stream's input block b is the client block the server's
// tick b consumed (silence where none had come). So the sample's capture time is known on the audio clock.
function measureRoundTrip(id, playedAt) {
  const block = call.ready.block;
  const first = call.outputStarts[id];
  const tick = Math.floor(first / block);
  const consumed = call.consumed[tick];
  if (consumed === undefined || consumed === SILENCE || call.captureEnd[consumed] === undefined) return;
  const captured = call.captureEnd[consumed] - (block - 1 - (first % block)) / 16000;
  const devices = (call.context.baseLatency || 0) + (call.context.outputLatency || 0);
  const ms = 1000 * (playedAt - captured + devices);
  call.roundTrip = call.roundTrip === undefined ? ms : 0.9 * call.roundTrip + 0.1 * ms;
  exposed.roundTripMs = call.roundTrip;
  $("roundtrip").textContent = `${call.roundTrip.toFixed(0)} ms`;
}

function stop(message = "Stopped.") {
  if (!call) return;
  const { ws, context, microphone } = call;
  call = null;
  if (ws.readyState === WebSocket.OPEN) ws.close(1000, "the caller stopped");
  microphone.getTracks().forEach((track) => track.stop());
  context.close();
  for (const id of ["level-in", "level-out"]) drawLevel($(id), 0);
  for (const cell of document.querySelectorAll("#figures td")) cell.textContent = "–";
  $("status").classList.remove("warning");
  $("status").textContent = message;
  $("start").disabled = false;
  $("stop").disabled = true;
}

const showUpload = () => ($("upload-label").hidden = $("voice").value !== "upload");
$("voice").addEventListener("change", showUpload);
$("upload").addEventListener("change", () => {
  if ($("upload").files.length) $("voice").value = "upload"; // a chosen file is the voice, whatever was selected
  showUpload();
});
$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stop());
loadInfo().catch((err) => ($("status").textContent = `The server did not answer: ${err.message}`));
