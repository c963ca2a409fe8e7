// The demo: a two-player chess clock on SyncKairos, written against the
// TypeScript SDK's build (served next to this file), with no build step.
// Both clocks are computed every frame from the last state and the measured
// server clock; nothing here counts time.

import { SyncKairosClient, SyncKairosError, watch } from '/demo/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get('token') ?? undefined;
const client = new SyncKairosClient({ baseUrl: location.origin, token });
let live;

$('origin').textContent = location.host;

if (params.get('session')) {
  join(params.get('session'));
} else {
  $('create').hidden = false;
}

$('create').addEventListener('submit', async (e) => {
  e.preventDefault();
  const bank = Math.round(Number($('minutes').value) * 60_000);
  const increment = Math.round(Number($('increment').value) * 1000);
  const id = uuid();
  try {
    await client.createSession({
      session_id: id,
      sync_mode: 'per_participant',
      participants: [0, 1].map((i) => ({ participant_id: uuid(), participant_index: i, total_time_ms: bank })),
      total_time_ms: 2 * bank,
      increment_ms: increment,
      metadata: { demo: 'chess', names: ['White', 'Black'] },
    });
  } catch (err) {
    return say(explain(err));
  }
  const url = new URL(location.href);
  url.searchParams.set('session', id);
  history.replaceState(null, '', url);
  $('create').hidden = true;
  join(id);
});

function join(id) {
  $('game').hidden = false;
  const share = new URL(location.href);
  share.searchParams.set('session', id);
  $('share').href = share.href;
  $('share').textContent = share.href;
  live = watch(client, id);
  window.synckairos = { live, client };
  live.on('connection', (status) => {
    $('connection').dataset.status = status;
    $('connection').textContent = status === 'open' ? 'live' : status;
  });
  live.on('state', () => {
    say('');
    render();
  });
  live.on('deleted', () => say('The session was deleted.'));
  live.on('timeout', (m) => say(`${name(m.participant_id)} ran out of time.`));
  live.on('error', (e) => say(e.code === 'SESSION_NOT_FOUND' ? 'No such session (yet).' : e.message));
  live.on('clock', () => {
    const c = live.clock;
    $('offset').textContent = `${signed(c.offsetMs)} ms ± ${c.uncertaintyMs.toFixed(1)}`;
    $('rtt').textContent = `${c.rttMs.toFixed(1)} ms`;
  });
  requestAnimationFrame(function frame() {
    renderClocks();
    requestAnimationFrame(frame);
  });
}

function render() {
  const s = live.state;
  if (!s) return;
  const running = s.status === 'running';
  $('start').disabled = s.status !== 'pending';
  $('switch').disabled = !running;
  $('pause').disabled = !running;
  $('resume').disabled = s.status !== 'paused';
  $('version').textContent = String(s.version);
  const who = s.active_participant_id ? `, ${name(s.active_participant_id)} to move` : '';
  $('session-status').textContent = `${s.status}${running ? who : ''}`;
  renderClocks();
}

function renderClocks() {
  const s = live?.state;
  if (!s) return;
  s.participants.slice(0, 2).forEach((p, i) => {
    const el = $(`clock-${i}`);
    const ms = live.remainingMs(p.participant_id) ?? 0;
    el.querySelector('.time').textContent = format(ms);
    el.classList.toggle('active', p.is_active && s.status === 'running');
    el.classList.toggle('flagged', p.has_expired);
  });
}

// Pressing the clock of the player to move ends their move, as on a real
// chess clock. `expected_version` makes a double press (or both players at
// once) a 409 instead of passing the turn twice.
for (const i of [0, 1]) {
  $(`clock-${i}`).addEventListener('click', () => {
    const s = live?.state;
    if (s?.status === 'running' && s.participants[i]?.participant_id === s.active_participant_id) move();
  });
}
$('switch').addEventListener('click', move);
$('start').addEventListener('click', () => act((id) => client.start(id)));
$('pause').addEventListener('click', () => act((id) => client.pause(id)));
$('resume').addEventListener('click', () => act((id) => client.resume(id)));
$('copy').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText($('share').href);
    say('Link copied.');
  } catch {
    say('Copy the link above.');
  }
});

function move() {
  const s = live?.state;
  if (s) act((id) => client.switch(id, { expected_version: s.version }));
}

async function act(call) {
  const s = live?.state;
  if (!s) return;
  try {
    await call(s.session_id);
  } catch (err) {
    say(explain(err));
  }
}

function explain(err) {
  if (err instanceof SyncKairosError) {
    if (err.code === 'CONFLICT') return 'The other side moved first.';
    return `${err.code}: ${err.message}`;
  }
  return String(err);
}

function say(text) {
  $('message').textContent = text;
}

function name(pid) {
  const s = live?.state;
  const i = s?.participants.findIndex((p) => p.participant_id === pid) ?? -1;
  return s?.metadata?.names?.[i] ?? `Player ${i + 1}`;
}

/** m:ss, with tenths under 20 s. */
function format(ms) {
  const tenths = Math.floor(ms / 100);
  const m = Math.floor(tenths / 600);
  const s = Math.floor(tenths / 10) % 60;
  const base = `${m}:${String(s).padStart(2, '0')}`;
  return ms < 20_000 ? `${base}.${tenths % 10}` : base;
}

function signed(x) {
  return `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
}

/** A random (v4) UUID; `crypto.randomUUID` exists only in secure contexts. */
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
