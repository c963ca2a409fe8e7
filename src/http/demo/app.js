// The demo: a two-player chess clock on SyncKairos, written against the
// TypeScript SDK's build (served next to this file), with no build step.
// Both clocks are computed every frame from the last state and the measured
// server clock; nothing here counts time: a delay running out or a byo-yomi
// period lost shows from the SDK's clockFace, the server's own rules.

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

// The picker shows the parameters of the chosen control only (the others are
// disabled, so the form does not validate what it will not send).
function showParameters() {
  const chosen = $('control').value;
  for (const label of document.querySelectorAll('#create label[data-for]')) {
    const on = label.dataset.for.split(' ').includes(chosen);
    label.hidden = !on;
    label.querySelector('input').disabled = !on;
  }
}
$('control').addEventListener('change', showParameters);
showParameters();

/** The create request's `time_control` from the picker. */
function chosenControl() {
  const ms = (id) => Math.round(Number($(id).value) * 1000);
  const n = (id) => Math.round(Number($(id).value));
  switch ($('control').value) {
    case 'bronstein':
      return { type: 'bronstein', delay_ms: ms('delay') };
    case 'simple_delay':
      return { type: 'simple_delay', delay_ms: ms('delay') };
    case 'byoyomi':
      return { type: 'byoyomi', periods: n('periods'), period_ms: ms('byo-period') };
    case 'canadian':
      return { type: 'canadian', moves: n('moves'), period_ms: ms('canadian-period') };
    case 'hourglass':
      return { type: 'hourglass' };
    default:
      return { type: 'fischer', increment_ms: ms('increment') };
  }
}

$('create').addEventListener('submit', async (e) => {
  e.preventDefault();
  const bank = Math.round(Number($('minutes').value) * 60_000);
  const id = uuid();
  try {
    await client.createSession({
      session_id: id,
      sync_mode: 'per_participant',
      participants: [0, 1].map((i) => ({ participant_id: uuid(), participant_index: i, total_time_ms: bank })),
      total_time_ms: 2 * bank,
      time_control: chosenControl(),
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
  $('time-control').textContent = describe(s.time_control, s.increment_ms);
  renderClocks();
}

function renderClocks() {
  const s = live?.state;
  if (!s) return;
  s.participants.slice(0, 2).forEach((p, i) => {
    const el = $(`clock-${i}`);
    const face = live.clockFace(p.participant_id);
    const shown = clockShows(s.time_control, face, live.remainingMs(p.participant_id) ?? 0);
    set(el.querySelector('.time'), format(shown.ms));
    set(el.querySelector('.detail'), shown.detail);
    el.classList.toggle('active', p.is_active && s.status === 'running');
    el.classList.toggle('flagged', p.has_expired);
    el.classList.toggle('overtime', face?.in_overtime === true);
    // The live values as attributes too, for scripts and tests.
    for (const key of FACE) {
      if (face?.[key] === undefined) delete el.dataset[camel(key)];
      else el.dataset[camel(key)] = String(face[key]);
    }
  });
}

const FACE = ['bank_remaining_ms', 'delay_remaining_ms', 'periods_left', 'moves_left', 'period_remaining_ms', 'in_overtime'];

/** What a clock shows: the big time and a line under it. The big time is
 * the bank (a delay does not touch it until it runs out), in overtime the
 * period; without a time control, the remaining time. */
function clockShows(tc, face, remaining) {
  if (!tc || !face) return { ms: remaining, detail: '' };
  const parts = [];
  let ms = face.bank_remaining_ms;
  switch (tc.type) {
    case 'fischer':
      parts.push(`+${seconds(tc.increment_ms)} per move`);
      break;
    case 'bronstein':
    case 'simple_delay':
      parts.push(`delay ${format(face.delay_remaining_ms ?? 0)}`);
      break;
    case 'byoyomi':
      if (face.in_overtime) {
        ms = face.period_remaining_ms ?? 0;
        parts.push('overtime', plural(face.periods_left ?? 0, 'period') + ' left');
      } else {
        parts.push('main time', `then ${face.periods_left} × ${seconds(tc.period_ms)}`);
      }
      break;
    case 'canadian':
      if (face.in_overtime) {
        ms = face.period_remaining_ms ?? 0;
        parts.push('overtime', `${plural(face.moves_left ?? tc.moves, 'move')} to make`);
      } else {
        parts.push('main time', `then ${plural(tc.moves, 'move')} in ${seconds(tc.period_ms)}`);
      }
      break;
    case 'hourglass':
      parts.push('hourglass');
      break;
  }
  if (tc.type !== 'canadian' && face.moves_left !== undefined) {
    parts.push(`${plural(face.moves_left, 'move')} to the next stage`);
  }
  return { ms, detail: parts.join(' · ') };
}

/** The time control in words, for the line under the clocks. */
function describe(tc, increment) {
  switch (tc?.type) {
    case undefined:
      return increment ? `Fischer +${seconds(increment)}` : '';
    case 'fischer':
      return `Fischer +${seconds(tc.increment_ms)}`;
    case 'bronstein':
      return `Bronstein delay ${seconds(tc.delay_ms)}`;
    case 'simple_delay':
      return `US delay ${seconds(tc.delay_ms)}`;
    case 'byoyomi':
      return `Byo-yomi ${tc.periods} × ${seconds(tc.period_ms)}`;
    case 'canadian':
      return `Canadian overtime: ${plural(tc.moves, 'move')} in ${seconds(tc.period_ms)}`;
    case 'hourglass':
      return 'Hourglass: what one spends, the other gains';
    default:
      return tc.type;
  }
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

/** Whole seconds, or m:ss from a minute on. */
function seconds(ms) {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** periods_left → periodsLeft (for dataset). */
function camel(key) {
  return key.replace(/_(\w)/g, (_, c) => c.toUpperCase());
}

/** Sets a text only when it changes (this runs every frame). */
function set(el, text) {
  if (el.textContent !== text) el.textContent = text;
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
