// The shoal tracker's status page: polls /api/swarm once a second and updates the page in place.
// Rows are keyed (files by id, peers by address), so a row that stays keeps its place, a new one
// flashes once, a gone one disappears; names from the network only ever go in as text.
'use strict';

const POLL_MS = 1000;
const ROWS = 500;

const SERIES = [
  { key: 'registrations', label: 'Registrations', color: '--s-registrations' },
  { key: 'queries', label: 'Queries', color: '--s-queries' },
  { key: 'heartbeats', label: 'Heartbeats', color: '--s-heartbeats' },
  { key: 'dropped', label: 'Dropped', color: '--s-dropped' },
  { key: 'datagrams', label: 'Datagrams', color: '--s-datagrams' },
];

const $ = (id) => document.getElementById(id);

// For tests and the curious: how many snapshots this page has drawn since it loaded.
window.shoal = { updates: 0, loadedAt: Date.now() };

let query = '';
let first = true;

const fmt = new Intl.NumberFormat('en-US');

function num(n) {
  return fmt.format(n);
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u += 1;
  }
  return u === 0 ? `${n} B` : `${n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0)} ${units[u]}`;
}

// How much of a file a downloader has, as a whole percentage (never 100 % before it is done).
function percent(have, size) {
  if (!size) return '0%';
  return `${Math.min(99, Math.floor((have / size) * 100))}%`;
}

function duration(s) {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function ago(s) {
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  return duration(Math.round(s));
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function setAttr(e, name, value) {
  if (e.getAttribute(name) !== value) e.setAttribute(name, value);
}

// Makes `tbody` show `items` in order, reusing the row of each key.
function sync(tbody, cache, items, key, build, update) {
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    const k = key(item);
    seen.add(k);
    let tr = cache.get(k);
    if (!tr) {
      tr = build(item);
      if (!first) tr.classList.add('fresh');
      cache.set(k, tr);
    }
    update(tr, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const [k, tr] of cache) {
    if (!seen.has(k)) {
      tr.remove();
      cache.delete(k);
    }
  }
}

const fileRows = new Map();
const peerRows = new Map();

function buildFile(f) {
  const tr = el('tr');
  tr.dataset.fileId = f.id;
  const name = el('td');
  name.append(el('span', 'fname'), el('span', 'alias'));
  const id = el('button', 'fid');
  id.type = 'button';
  id.addEventListener('click', () => copy(id, f.id));
  const idCell = el('td');
  idCell.append(id);
  const seeders = el('td', 'num');
  seeders.append(el('span', 'seeders'), el('small', 'leechers'));
  tr.append(name, el('td', 'num'), seeders, idCell);
  return tr;
}

function updateFile(tr, f) {
  const [name, size, seeders, id] = tr.children;
  setText(name.firstChild, f.name);
  const otherNames = f.alias_count > f.aliases.length ? ` +${num(f.alias_count - f.aliases.length)} more` : '';
  setText(name.lastChild, f.aliases.length ? `also ${f.aliases.join(', ')}${otherNames}` : '');
  setAttr(name, 'title', [f.name, ...f.aliases].join('\n'));
  setText(size, bytes(f.size));
  setAttr(size, 'title', `${num(f.size)} bytes`);
  setText(seeders.firstChild, num(f.seeders));
  setText(seeders.lastChild, f.leechers ? `+${num(f.leechers)} downloading` : '');
  const more = f.leechers > f.downloaders.length ? `\n+${num(f.leechers - f.downloaders.length)} more` : '';
  setAttr(seeders, 'title', `${num(f.seeders)} with the whole file` +
    f.downloaders.map((d) => `\n${d.addr}: ${percent(d.bytes, f.size)}`).join('') + more);
  const button = id.firstChild;
  if (!button.classList.contains('copied')) setText(button, `${f.id.slice(0, 12)}…`);
  setAttr(button, 'title', `${f.id}\nclick to copy`);
}

function copy(button, text) {
  const done = () => {
    button.classList.add('copied');
    button.textContent = 'copied';
    setTimeout(() => button.classList.remove('copied'), 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => {});
  } else {
    // Plain http on a LAN address: fall back to selecting a temporary field.
    const t = el('textarea');
    t.value = text;
    document.body.append(t);
    t.select();
    try {
      document.execCommand('copy');
      done();
    } catch (_) { /* nothing more to try */ }
    t.remove();
  }
}

function buildPeer(p) {
  const tr = el('tr');
  tr.dataset.peer = p.addr;
  const addr = el('td', 'addr', p.addr);
  addr.append(el('small'));
  const beat = el('div', 'beat');
  const bar = el('span', 'bar');
  bar.append(el('span'));
  beat.append(el('span', 'dot'), bar, el('span', 'ago'));
  const beatCell = el('td');
  beatCell.append(beat);
  tr.append(addr, el('td', 'pfiles num'), beatCell);
  return tr;
}

function updatePeer(tr, p, interval, timeout) {
  const [addr, files, beatCell] = tr.children;
  const more = p.files > p.names.length ? ` +${num(p.files - p.names.length)} more` : '';
  const getting = p.downloading.map((d) => `${d.name} ${percent(d.bytes, d.size)}`);
  const moreGetting = p.partial > getting.length ? ` +${num(p.partial - getting.length)} more` : '';
  const down = p.partial ? ` · downloading ${getting.join(', ')}${moreGetting}` : '';
  setText(addr.lastChild, p.names.join(', ') + more + down);
  setAttr(addr, 'title', `${p.addr}\n${p.names.join('\n')}${more}${down ? `\n${down.slice(3)}` : ''}`);
  setText(files, num(p.files));
  const beat = beatCell.firstChild;
  const health = p.idle_secs <= interval * 1.5 ? 'ok' : p.idle_secs <= timeout * 0.75 ? 'late' : 'dying';
  setAttr(beat, 'data-health', health);
  const left = Math.max(0, 1 - p.idle_secs / timeout);
  beat.querySelector('.bar span').style.width = `${(left * 100).toFixed(1)}%`;
  setText(beat.querySelector('.ago'), `${ago(p.idle_secs)} ago`);
  setAttr(beat, 'title', `dropped after ${timeout} s of silence`);
}

// One row per series: a bar per second (the last, still filling, drawn lighter), the last full
// second and the minute's total.
const seriesRows = new Map();

function drawSeries(activity) {
  const box = $('series');
  if (!box.childElementCount) {
    box.append(el('span', 'head', ''), el('span', 'head', ''), el('span', 'head num', 'last second'), el('span', 'head num', 'last minute'));
    for (const s of SERIES) {
      const label = el('span', 'label');
      label.style.setProperty('--c', `var(${s.color})`);
      label.append(el('i'), el('span', '', s.label));
      const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      svg.setAttribute('viewBox', '0 0 600 34');
      svg.setAttribute('preserveAspectRatio', 'none');
      svg.style.setProperty('--c', `var(${s.color})`);
      const base = document.createElementNS(svg.namespaceURI, 'line');
      base.setAttribute('x1', '0');
      base.setAttribute('x2', '600');
      base.setAttribute('y1', '33.5');
      base.setAttribute('y2', '33.5');
      svg.append(base);
      const bars = [];
      for (let i = 0; i < 60; i += 1) {
        const r = document.createElementNS(svg.namespaceURI, 'rect');
        r.setAttribute('x', String(i * 10 + 1));
        r.setAttribute('width', '8');
        r.setAttribute('rx', '1.5');
        if (i === 59) r.setAttribute('class', 'now');
        r.append(document.createElementNS(svg.namespaceURI, 'title'));
        svg.append(r);
        bars.push(r);
      }
      const now = el('span', 'now-value');
      const sum = el('span', 'sum');
      box.append(label, svg, now, sum);
      seriesRows.set(s.key, { bars, now, sum, label: s.label.toLowerCase() });
    }
  }
  for (const s of SERIES) {
    const values = activity[s.key] || [];
    const row = seriesRows.get(s.key);
    const max = Math.max(1, ...values);
    values.forEach((v, i) => {
      const h = v === 0 ? 0 : Math.max(2, (v / max) * 32);
      const r = row.bars[i];
      r.setAttribute('y', String(33 - h));
      r.setAttribute('height', String(h));
      const back = values.length - 1 - i;
      r.firstChild.textContent = `${num(v)} ${row.label}, ${back === 0 ? 'this second' : `${back} s ago`}`;
    });
    setText(row.now, num(values[values.length - 2] || 0));
    setText(row.sum, num(values.reduce((a, b) => a + b, 0)));
  }
}

function render(d) {
  const t = d.tracker;
  setText($('udp'), t.udp);
  setText($('timing'), `${t.interval_secs} s / ${t.peer_timeout_secs} s`);
  setText($('uptime'), duration(t.uptime_secs));

  const g = d.gauges;
  setText($('g-files'), num(g.files));
  setText($('g-files-hint'), `of ${num(t.max_files)} allowed`);
  setText($('g-peers'), num(g.peers));
  setText($('g-peers-hint'), `of ${num(t.max_peers)} allowed`);
  setText($('g-regs'), num(g.registrations));
  setText($('g-regs-hint'), `${num(d.totals.registrations)} since start`);
  const a = d.activity;
  const last = (k) => (a[k].length > 1 ? a[k][a[k].length - 2] : 0);
  setText($('g-rate'), num(last('datagrams')));
  setText($('g-rate-hint'), `${bytes(last('bytes_in'))}/s in · ${num(last('dropped'))} dropped`);
  const ratio = d.totals.bytes_in ? d.totals.bytes_out / d.totals.bytes_in : 0;
  setText($('g-ratio'), ratio.toFixed(2));
  setText($('g-ratio-hint'), `${bytes(d.totals.bytes_out)} out · ${bytes(d.totals.bytes_in)} in`);

  drawSeries(a);

  const files = d.files;
  setText($('files-count'), query ? `${num(files.total)} matching` : num(files.total));
  sync($('files').tBodies[0], fileRows, files.rows, (f) => f.id, buildFile, updateFile);
  $('files-empty').hidden = files.rows.length > 0;
  setText($('files-empty'), '');
  if (files.rows.length === 0) {
    const p = $('files-empty');
    if (query) {
      p.textContent = `No file matches “${query}”.`;
    } else {
      p.append('No files yet. Share some with ', el('code', '', 'seeder FILE…'));
    }
  }
  const fmore = files.total - files.rows.length;
  $('files-more').hidden = fmore <= 0;
  setText($('files-more'), `${num(fmore)} more not shown; narrow the filter to see them.`);

  const peers = d.peers;
  setText($('peers-count'), num(peers.total));
  sync($('peers').tBodies[0], peerRows, peers.rows, (p) => p.addr, buildPeer,
    (tr, p) => updatePeer(tr, p, t.interval_secs, t.peer_timeout_secs));
  $('peers-empty').hidden = peers.rows.length > 0;
  const pmore = peers.total - peers.rows.length;
  $('peers-more').hidden = pmore <= 0;
  setText($('peers-more'), `${num(pmore)} more not shown.`);

  setText($('limits'), `shoal ${t.version} · caps: ${num(t.max_files)} files, ${num(t.max_peers)} peers, ` +
    `${num(t.max_registrations)} registrations (at most ${bytes(t.worst_case_bytes)} of state) · ` +
    (t.rate_limit ? `${num(t.rate_limit)} requests/s per source` : 'no rate limit'));
  document.title = `shoal tracker · ${num(g.files)} files · ${num(g.peers)} peers`;
  first = false;
  window.shoal.updates += 1;
}

function setLive(ok, why) {
  const live = $('live');
  setAttr(live, 'data-state', ok ? 'live' : 'offline');
  setText($('live-text'), ok ? 'live' : 'offline, retrying');
  setAttr(live, 'title', ok ? 'updates every second' : `the tracker did not answer: ${why}`);
}

// A private swarm's tracker asks for the key its page was opened with (?key=...).
const KEY = new URLSearchParams(location.search).get('key');
const keyParam = KEY ? `&key=${encodeURIComponent(KEY)}` : '';

async function poll() {
  try {
    const q = query ? `&q=${encodeURIComponent(query)}` : '';
    const res = await fetch(`/api/swarm?limit=${ROWS}${q}${keyParam}`, { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json());
    setLive(true);
  } catch (e) {
    setLive(false, e.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  let timer = null;
  $('filter').addEventListener('input', (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      query = e.target.value.trim();
      poll.once();
    }, 200);
  });
  poll();
});

// An extra fetch right away (after typing a filter) without starting a second polling loop.
poll.once = async () => {
  try {
    const q = query ? `&q=${encodeURIComponent(query)}` : '';
    const res = await fetch(`/api/swarm?limit=${ROWS}${q}${keyParam}`, { cache: 'no-store' });
    if (res.ok) render(await res.json());
  } catch (_) { /* the loop reports it */ }
};
