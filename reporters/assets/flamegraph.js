// memprof flamegraph page: draws window.MEMPROF_DATA as a memory chart (heap and resident set
// over time, with a brush to select a range) above a d3-flame-graph of the bytes held by each
// stack, with search, zoom, tooltips, an icicle view and a thread filter. Plain JS for the
// globals d3 (v7) and flamegraph (d3-flame-graph 4.x); no modules, no build step, and it must
// never load anything: the page opens from file:// with no network.
//
// Data contract, version 1 (window.MEMPROF_DATA, written by reporters/flamegraph.c):
// {
//   "version": 1,
//   "mode": "peak" | "leaks" | "temporary",      what the flamegraph shows
//   "title": str,
//   "capture": {"path": str, "pid": int, "argv": [str], "python": str, "duration_s": num,
//               "truncated": bool, "native": bool, "aggregated": bool},
//       aggregated (memprof run --aggregate): no intervals, and the chart has no range to select
//   "total": {"bytes": int, "allocations": int},  whole-run figure of the mode, all threads
//   "peak_time_s": num,
//   "strings": [str],                             string table
//   "frames": {"function": [strIdx], "file": [strIdx], "line": [int], "kind": [int]},
//       frame i; line -1 = unknown; kind 0 Python, 1 native (file: library path or source file),
//       2 memprof pseudo-frame, 3 merged (function like "(37 smaller)"); frame 0 is the root
//   "nodes": {"parent": [nodeIdx], "frame": [frameIdx]},
//       node 0 = root (parent -1); parent index < own index; children order = index order
//   "threads": [{"id": int, "name": str|null}],   thread 1 is the main thread
//   "sites": {"node": [], "thread": [], "bytes": [], "count": []},
//       exact whole-run amounts of the mode held at stack `node` itself (not its descendants)
//       by thread `thread` (a threads[].id); several sites may share a node
//   "chart": {"bucket_s": num, "heap": [int], "rss": [int|null]},
//       bucket i covers [i*bucket_s, (i+1)*bucket_s): highest heap bytes, highest resident set
//       (null: no sample in it)
//   "end_bucket": int|null,                       bucket holding the end of the script
//   "intervals": {"node": [], "thread": [], "a": [int], "f": [int], "bytes": [], "count": []}
//       what stack `node` held on thread `thread`. Each bucket has a snapshot: the moment its
//       heap was highest (chart.heap). "peak": live at the snapshots of buckets a..f-1 (f -1: to
//       the end); "leaks": made in bucket a and still live when the script ended (f = -1);
//       "temporary": made in bucket a (f = a).
// }
// With no range selected the flamegraph shows `sites` (exact). A range of buckets [i, j] shows:
//   peak: the snapshot of the bucket p in [i, j] with the most live bytes, live meaning
//         a <= p and (f == -1 or f > p) (first p on ties): the highest point of the range,
//         exactly; leaks: i <= a <= j and f == -1; temporary: i <= a <= j. The thread filter
//         applies to sites and intervals alike.
//
// Test hook, window.memprof:
//   ready            true once the page has drawn from the data
//   nodeCount()      number of frame rects drawn in the flamegraph
//   view()           {bytes, allocations, range: {i, j, p}|null, thread: id|null, inverted, matches}
//   selectRange(i,j) selects buckets [i, j] on the chart as the brush does (i null: whole run);
//                    returns view()
(function () {
  'use strict';

  var DURATION = 400; // ms of the flamegraph's transitions
  var CELL = 18; // px per frame row
  var MATCH = '#e600e6'; // colour of search matches (d3-flame-graph's own)
  var KIND = ['Python', 'native', 'memprof', 'merged'];
  var MODES = {
    peak: {total: 'Peak heap', view: 'held at the peak'},
    leaks: {total: 'Leaked', view: 'still live at exit'},
    temporary: {total: 'Temporary allocations', view: 'temporary'}
  };

  var D = window.MEMPROF_DATA;
  var state = {range: null, thread: null, inverted: false, search: '', matches: 0};
  var model = null; // read once from D by readModel()
  var chart = null; // the d3-flame-graph chart of the current view
  var view = null; // {root, bytes, allocations, p}
  var timeline = null; // {x, brush, gBrush, point} of the memory chart
  var mouse = {x: 0, y: 0};

  function $(id) { return document.getElementById(id); }

  function showError(message) {
    var el = $('error');
    el.hidden = false;
    el.textContent += (el.textContent ? '\n' : '') + message;
  }

  window.addEventListener('error', function (e) { showError('Error in the page: ' + e.message); });

  // ---- formatting

  function humanBytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    var v = Math.abs(n);
    var u = 0;
    if (v < 1024) return n + ' B';
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return (n < 0 ? '-' : '') + v.toFixed(1) + ' ' + units[u];
  }

  function exact(n) { return Math.round(n).toLocaleString('en-US'); }

  function plural(n, word) { return exact(n) + ' ' + word + (n === 1 ? '' : 's'); }

  function seconds(t) { return (+t.toFixed(3)) + ' s'; }

  function basename(path) { return path.slice(path.lastIndexOf('/') + 1); }

  function hash(s) { // FNV-1a, to a number in [0, 1)
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return (h >>> 0) / 4294967296;
  }

  // ---- the data

  function column(obj, name, n) {
    var a = obj && obj[name];
    if (!Array.isArray(a) || (n !== undefined && a.length !== n)) throw new Error('data: bad column ' + name);
    return a;
  }

  function readModel() {
    if (!D || D.version !== 1) throw new Error('data: expected version 1, got ' + (D && D.version));
    var S = D.strings || [];
    var str = function (i) { return (i >= 0 && i < S.length && S[i] != null) ? String(S[i]) : ''; };
    var nf = column(D.frames, 'function').length;
    var fr = {fn: column(D.frames, 'function'), file: column(D.frames, 'file', nf),
      line: column(D.frames, 'line', nf), kind: column(D.frames, 'kind', nf)};
    var nn = column(D.nodes, 'parent').length;
    var parent = Int32Array.from(D.nodes.parent);
    var frame = Int32Array.from(column(D.nodes, 'frame', nn));
    for (var k = 0; k < nn; k++) {
      if ((k === 0 ? parent[k] !== -1 : parent[k] < 0 || parent[k] >= k) || frame[k] < 0 || frame[k] >= nf) {
        throw new Error('data: bad node ' + k);
      }
    }
    var ns = column(D.sites, 'node').length;
    var sites = {node: D.sites.node, thread: column(D.sites, 'thread', ns),
      bytes: column(D.sites, 'bytes', ns), count: column(D.sites, 'count', ns)};
    var iv = D.intervals || {node: [], thread: [], a: [], f: [], bytes: [], count: []};
    var ni = column(iv, 'node').length;
    ['thread', 'a', 'f', 'bytes', 'count'].forEach(function (c) { column(iv, c, ni); });
    var labels = new Array(nf);
    var files = new Array(nf);
    for (var f = 0; f < nf; f++) {
      var fn = str(fr.fn[f]) || '?';
      var file = str(fr.file[f]);
      var line = fr.line[f];
      var at = file ? basename(file) + (line >= 0 ? ':' + line : '') : '';
      labels[f] = (fr.kind[f] <= 1 && at) ? fn + ' (' + at + ')' : fn;
      files[f] = file ? file + (line >= 0 ? ':' + line : '') : '';
    }
    var chartData = D.chart || {bucket_s: 1, heap: [], rss: []};
    return {nodes: nn, parent: parent, frame: frame, sites: sites, intervals: iv, labels: labels,
      files: files, fn: fr.fn.map(str), kind: fr.kind, str: str, threads: D.threads || [],
      bucket: +chartData.bucket_s || 1, heap: chartData.heap || [], rss: chartData.rss || []};
  }

  function threadLabel(t) {
    var name = t.name != null && t.name !== '' ? t.name : (t.id === 1 ? 'main' : '');
    return (t.id + ' ' + name).trim();
  }

  // Peak mode over buckets [i, j]: the bucket p whose end has the most live bytes (first on ties).
  function peakBucket(iv, keep, i, j) {
    var n = j + 2;
    var diff = new Float64Array(n);
    for (var k = 0; k < iv.a.length; k++) {
      if (!keep(k) || iv.a[k] > j) continue;
      diff[Math.max(iv.a[k], 0)] += iv.bytes[k];
      if (iv.f[k] >= 0 && iv.f[k] <= j) diff[iv.f[k]] -= iv.bytes[k];
    }
    var live = 0;
    var best = -1;
    var p = i;
    for (var b = 0; b <= j; b++) {
      live += diff[b];
      if (b >= i && live > best) { best = live; p = b; }
    }
    return p;
  }

  // The self bytes and allocations of each node in the current view: O(sites) or O(intervals).
  function selfAmounts() {
    var m = model;
    var bytes = new Float64Array(m.nodes);
    var count = new Float64Array(m.nodes);
    var t = state.thread;
    var add = function (src, k) {
      var node = src.node[k];
      if (node >= 0 && node < m.nodes) { bytes[node] += +src.bytes[k]; count[node] += +src.count[k]; }
    };
    var p = null;
    if (!state.range) {
      for (var s = 0; s < m.sites.node.length; s++) if (t === null || m.sites.thread[s] === t) add(m.sites, s);
      return {bytes: bytes, count: count, p: p};
    }
    var iv = m.intervals;
    var i = state.range.i;
    var j = state.range.j;
    var keep = function (k) { return t === null || iv.thread[k] === t; };
    var take;
    if (D.mode === 'peak') {
      p = peakBucket(iv, keep, i, j);
      take = function (k) { return iv.a[k] <= p && (iv.f[k] < 0 || iv.f[k] > p); };
    } else if (D.mode === 'leaks') {
      take = function (k) { return iv.a[k] >= i && iv.a[k] <= j && iv.f[k] < 0; };
    } else {
      take = function (k) { return iv.a[k] >= i && iv.a[k] <= j; };
    }
    for (var k = 0; k < iv.node.length; k++) if (keep(k) && take(k)) add(iv, k);
    return {bytes: bytes, count: count, p: p};
  }

  // The hierarchy d3-flame-graph draws: value = bytes including descendants, nodes holding
  // nothing left out. Parents come before children, so this is two passes over the nodes.
  function buildTree(self) {
    var m = model;
    var total = Float64Array.from(self.bytes);
    var count = Float64Array.from(self.count);
    for (var k = m.nodes - 1; k > 0; k--) { total[m.parent[k]] += total[k]; count[m.parent[k]] += count[k]; }
    var objs = new Array(m.nodes);
    for (k = 0; k < m.nodes; k++) {
      if (!(total[k] > 0)) continue;
      var o = {name: m.labels[m.frame[k]], value: total[k], node: k, frame: m.frame[k],
        allocations: count[k], selfBytes: self.bytes[k], selfAllocations: self.count[k]};
      objs[k] = o;
      if (k > 0) {
        var up = objs[m.parent[k]];
        (up.children || (up.children = [])).push(o);
      }
    }
    return objs[0] || null;
  }

  // ---- the flamegraph

  function colour(d) {
    var m = model;
    var f = d.data.frame;
    var kind = m.kind[f];
    var h = hash(m.fn[f] || '');
    if (kind === 0) return 'hsl(' + (22 + 28 * h).toFixed(1) + ',85%,' + (58 + 10 * h).toFixed(1) + '%)';
    if (kind === 1) return 'hsl(' + (188 + 30 * h).toFixed(1) + ',55%,' + (62 + 10 * h).toFixed(1) + '%)';
    if (kind === 3) return '#c9ccd1';
    return 'hsl(270,25%,' + (72 + 8 * h).toFixed(1) + '%)';
  }

  function matches(d, term) {
    if (!term) return false;
    var m = model;
    var t = term.toLowerCase();
    return m.labels[d.data.frame].toLowerCase().indexOf(t) >= 0 ||
      m.files[d.data.frame].toLowerCase().indexOf(t) >= 0;
  }

  function onSearch(results) {
    state.matches = results.length;
    var el = $('search-result');
    if (!state.search) { el.textContent = ''; return; }
    var sum = 0;
    results.forEach(function (d) { // count nested matches once
      for (var up = d.parent; up; up = up.parent) if (up.highlight) return;
      sum += d.data.value;
    });
    el.textContent = exact(results.length) + (results.length === 1 ? ' match' : ' matches') +
      (results.length ? ': ' + humanBytes(sum) + ', ' + share(sum) + ' of this view' : '');
  }

  function share(bytes) {
    return view && view.bytes > 0 ? (100 * bytes / view.bytes).toFixed(1) + ' %' : '-';
  }

  function row(table, name, value) {
    var tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = value;
  }

  function tooltip() {} // d3-flame-graph calls it with its svg; we need nothing there
  tooltip.show = function (d) {
    var m = model;
    var o = d.data;
    var el = $('tooltip');
    el.textContent = '';
    var fn = el.appendChild(document.createElement('div'));
    fn.className = 'fn';
    fn.textContent = m.fn[o.frame] || '?';
    var where = el.appendChild(document.createElement('div'));
    where.className = 'where';
    where.textContent = KIND[m.kind[o.frame]] + (m.files[o.frame] ? ': ' + m.files[o.frame] : '');
    var table = el.appendChild(document.createElement('table'));
    row(table, 'bytes', humanBytes(o.value) + ' (' + exact(o.value) + ' B)');
    row(table, 'allocations', exact(o.allocations));
    row(table, 'share', share(o.value) + ' of this view');
    if (o.selfBytes > 0 && o.selfBytes !== o.value) {
      row(table, 'itself', humanBytes(o.selfBytes) + ' in ' + plural(o.selfAllocations, 'allocation'));
    }
    el.hidden = false;
    place();
  };
  tooltip.hide = function () { $('tooltip').hidden = true; };

  function place() {
    var el = $('tooltip');
    if (el.hidden) return;
    var x = mouse.x + 14;
    var y = mouse.y + 16;
    if (x + el.offsetWidth > window.innerWidth - 4) x = Math.max(4, mouse.x - el.offsetWidth - 14);
    if (y + el.offsetHeight > window.innerHeight - 4) y = Math.max(4, mouse.y - el.offsetHeight - 12);
    el.style.left = x + 'px';
    el.style.top = y + 'px';
  }

  function flameWidth() { return Math.max(200, $('flamegraph').clientWidth); }

  function drawFlame() {
    if (chart) { chart.destroy(); chart = null; }
    tooltip.hide();
    $('empty').hidden = !!view.root;
    state.matches = 0;
    if (!view.root) { onSearch([]); return; }
    chart = window.flamegraph()
      .width(flameWidth())
      .cellHeight(CELL)
      .resetHeightOnZoom(true) // as tall as the frames drawn (wider than minFrameSize) need
      .transitionDuration(DURATION)
      .minFrameSize(1)
      .sort(false)
      .inverted(state.inverted)
      .tooltip(tooltip)
      .setColorMapper(function (d) { return d.highlight ? MATCH : colour(d); })
      .setSearchMatch(matches)
      .setSearchHandler(onSearch);
    d3.select('#flamegraph').datum(view.root).call(chart);
    chart.search(state.search);
  }

  // ---- the view: amounts, tree, header and flamegraph for the current state

  function scopeText() {
    var parts = [];
    var r = state.range;
    if (r) {
      parts.push('buckets ' + r.i + '–' + r.j + ' (' + seconds(r.i * model.bucket) + '–' +
        seconds((r.j + 1) * model.bucket) + ')');
    } else {
      parts.push('whole run');
    }
    if (state.thread === null) {
      parts.push('all threads');
    } else {
      var t = model.threads.filter(function (x) { return x.id === state.thread; })[0] || {id: state.thread};
      parts.push('thread ' + threadLabel(t));
    }
    return '(' + MODES[D.mode].view + ', ' + parts.join(', ') + ')';
  }

  function refresh() {
    var self = selfAmounts();
    var root = buildTree(self);
    view = {root: root, bytes: root ? root.value : 0, allocations: root ? root.allocations : 0, p: self.p};
    if (state.range) state.range.p = self.p;
    $('view-total').textContent = humanBytes(view.bytes) + ' in ' + plural(view.allocations, 'allocation');
    $('view-scope').textContent = scopeText();
    rangeText();
    markPoint();
    drawFlame();
  }

  // ---- header

  function quote(arg) { return /^[\w@%+=:,./-]+$/.test(arg) ? arg : "'" + arg.replace(/'/g, "'\\''") + "'"; }

  function fact(parent, name, value, code) {
    var span = parent.appendChild(document.createElement('span'));
    span.appendChild(document.createTextNode(name + ' '));
    var b = span.appendChild(document.createElement(code ? 'code' : 'b'));
    b.textContent = value;
  }

  function drawHeader() {
    var c = D.capture || {};
    document.title = D.title || 'memprof flamegraph';
    $('title').textContent = D.title || 'memprof flamegraph';
    var facts = $('facts');
    if (c.argv && c.argv.length) fact(facts, 'command', c.argv.map(quote).join(' '), true);
    if (c.pid != null) fact(facts, 'pid', String(c.pid));
    if (c.python) fact(facts, 'Python', c.python);
    if (c.duration_s != null) fact(facts, 'duration', seconds(+c.duration_s));
    fact(facts, 'native frames', c.native ? 'yes' : 'no');
    if (c.path) fact(facts, 'capture', c.path, true);
    if (c.truncated) {
      $('truncated').hidden = false;
      $('truncated').textContent = 'Warning: this capture is truncated (the profiled program stopped ' +
        'writing it before the end), so these figures cover only what it recorded.';
    }
    var total = D.total || {bytes: 0, allocations: 0};
    $('mode-name').textContent = MODES[D.mode].total;
    $('mode-total').textContent = humanBytes(total.bytes) + ' in ' + plural(total.allocations, 'allocation') +
      (D.mode === 'peak' && D.peak_time_s != null ? ' at ' + seconds(+D.peak_time_s) : '');
    var select = $('thread');
    select.appendChild(new Option('all threads', ''));
    model.threads.forEach(function (t) { select.appendChild(new Option(threadLabel(t), String(t.id))); });
  }

  // ---- the memory chart

  function aggregated() { return !!(D.capture && D.capture.aggregated); }

  function byteTicks(max) {
    var unit = 1;
    while (max / unit >= 1024 && unit < Math.pow(1024, 5)) unit *= 1024;
    return d3.ticks(0, max / unit, 4).map(function (t) { return t * unit; });
  }

  function tickBytes(n) { return humanBytes(n).replace('.0 ', ' '); }

  function drawTimeline() {
    var m = model;
    var svg = d3.select('#chart');
    svg.selectAll('*').remove();
    timeline = null;
    var nb = m.heap.length;
    $('timeline').hidden = nb === 0;
    if (nb === 0) return;
    var W = Math.max(300, svg.node().clientWidth || 900);
    var H = 180;
    var M = {top: 16, right: 16, bottom: 24, left: 68};
    svg.attr('viewBox', '0 0 ' + W + ' ' + H);
    var bs = m.bucket;
    var x = d3.scaleLinear([0, nb * bs], [M.left, W - M.right]);
    var max = Math.max(1, d3.max(m.heap) || 0, d3.max(m.rss, function (v) { return v == null ? 0 : v; }) || 0);
    var y = d3.scaleLinear([0, max * 1.08], [H - M.bottom, M.top]);
    var ticks = byteTicks(max * 1.08);
    svg.append('g').attr('class', 'grid').selectAll('line').data(ticks).join('line')
      .attr('x1', M.left).attr('x2', W - M.right).attr('y1', y).attr('y2', y);
    var steps = function (values) { // a step per bucket, the last one closed at its end
      var pts = values.map(function (v, i) { return [i * bs, v]; });
      pts.push([nb * bs, values[nb - 1]]);
      return pts;
    };
    var heap = steps(m.heap);
    svg.append('path').attr('class', 'heap-area').attr('d', d3.area().curve(d3.curveStepAfter)
      .x(function (d) { return x(d[0]); }).y0(y(0)).y1(function (d) { return y(d[1]); })(heap));
    svg.append('path').attr('class', 'heap-line').attr('d', d3.line().curve(d3.curveStepAfter)
      .x(function (d) { return x(d[0]); }).y(function (d) { return y(d[1]); })(heap));
    if (m.rss.length === nb) {
      svg.append('path').attr('class', 'rss-line').attr('d', d3.line().curve(d3.curveStepAfter)
        .defined(function (d) { return d[1] != null; })
        .x(function (d) { return x(d[0]); }).y(function (d) { return y(d[1]); })(steps(m.rss)));
    }
    svg.append('g').attr('class', 'axis').attr('transform', 'translate(0,' + (H - M.bottom) + ')')
      .call(d3.axisBottom(x).ticks(Math.max(2, Math.floor(W / 90))).tickFormat(function (t) { return seconds(t); }));
    svg.append('g').attr('class', 'axis').attr('transform', 'translate(' + M.left + ',0)')
      .call(d3.axisLeft(y).tickValues(ticks).tickFormat(tickBytes));
    var marker = function (cls, t, label) { // a vertical line with its label, kept inside the chart
      var xm = x(t);
      var right = xm > W - M.right - 80;
      svg.append('line').attr('class', cls + '-marker')
        .attr('x1', xm).attr('x2', xm).attr('y1', M.top).attr('y2', H - M.bottom);
      svg.append('text').attr('class', cls + '-label').attr('x', right ? xm - 3 : xm + 3).attr('y', M.top - 4)
        .attr('text-anchor', right ? 'end' : 'start').text(label);
    };
    if (D.end_bucket != null && D.end_bucket < nb - 1) marker('end', (D.end_bucket + 1) * bs, 'script end');
    if (D.peak_time_s != null) marker('peak', +D.peak_time_s, 'peak');
    var point = svg.append('rect').attr('class', 'point').attr('y', M.top).attr('height', H - M.top - M.bottom);
    if (aggregated()) { // totals per stack: no range of time to select
      $('whole-run').hidden = true;
      return;
    }
    var brush = d3.brushX().extent([[M.left, M.top], [W - M.right, H - M.bottom]]).on('end', brushed);
    var gBrush = svg.append('g').attr('class', 'brush').call(brush);
    timeline = {x: x, brush: brush, gBrush: gBrush, point: point, buckets: nb};
    moveBrush();
    markPoint();
  }

  function brushed(event) {
    if (!event.sourceEvent) return; // our own moves
    var s = event.selection;
    if (!s) { setRange(null); return; }
    var bs = model.bucket;
    var x = timeline.x;
    var i = Math.floor(x.invert(s[0]) / bs + 1e-9);
    var j = Math.ceil(x.invert(s[1]) / bs - 1e-9) - 1;
    setRange(i, Math.max(i, j));
  }

  function moveBrush() {
    if (!timeline) return;
    var r = state.range;
    var x = timeline.x;
    timeline.gBrush.call(timeline.brush.move, r ? [x(r.i * model.bucket), x((r.j + 1) * model.bucket)] : null);
  }

  function markPoint() {
    if (!timeline) return;
    var r = state.range;
    var show = r && r.p != null;
    timeline.point.attr('display', show ? null : 'none');
    if (show) {
      timeline.point.attr('x', timeline.x(r.p * model.bucket))
        .attr('width', Math.max(1, timeline.x((r.p + 1) * model.bucket) - timeline.x(r.p * model.bucket)));
    }
  }

  function rangeText() {
    var el = $('range-text');
    var r = state.range;
    var bs = model.bucket;
    el.textContent = '';
    var add = function (text, bold) {
      el.appendChild(bold ? document.createElement('b') : document.createTextNode('')).textContent = text;
    };
    if (!r && aggregated()) {
      add('Whole run', true);
      add(': an aggregated capture (memprof run --aggregate) holds totals per stack, not events, so it ' +
        'has no ranges of time; record without --aggregate to see one.');
      return;
    }
    if (!r) {
      add('Whole run', true);
      add(': drag on the chart to see a range of time; "whole run" or a click beside the range comes back here.');
      return;
    }
    add('Range ' + seconds(r.i * bs) + '–' + seconds((r.j + 1) * bs), true);
    add(' (buckets ' + r.i + '–' + r.j + ')');
    if (D.mode === 'peak') {
      add(': the highest point of the range, in ');
      add('bucket ' + r.p + ' (' + seconds(r.p * bs) + '–' + seconds((r.p + 1) * bs) + ')', true);
      add(', shown below.');
    } else if (D.mode === 'leaks') {
      add(': leaks allocated in this range.');
    } else {
      add(': temporary allocations made in this range.');
    }
    add(' A range starts and ends on buckets of ' + seconds(bs) + '.');
  }

  function setRange(i, j) {
    if (i === null || i === undefined || !timeline) {
      state.range = null;
    } else {
      var last = timeline.buckets - 1;
      i = Math.min(Math.max(0, Math.floor(i)), last);
      j = Math.min(Math.max(i, Math.floor(j === undefined ? i : j)), last);
      state.range = {i: i, j: j, p: null};
    }
    refresh();
    moveBrush();
  }

  // ---- wiring

  function viewInfo() {
    return {bytes: view ? view.bytes : 0, allocations: view ? view.allocations : 0,
      range: state.range ? {i: state.range.i, j: state.range.j, p: state.range.p} : null,
      thread: state.thread, inverted: state.inverted, matches: state.matches};
  }

  function wire() {
    var searchTimer = 0;
    var search = $('search');
    var apply = function () {
      state.search = search.value.trim();
      if (chart) chart.search(state.search); else onSearch([]);
    };
    search.addEventListener('input', function () { clearTimeout(searchTimer); searchTimer = setTimeout(apply, 150); });
    search.addEventListener('keydown', function (e) {
      if (e.key === 'Enter') { clearTimeout(searchTimer); apply(); }
      if (e.key === 'Escape') { search.value = ''; apply(); }
    });
    $('thread').addEventListener('change', function (e) {
      state.thread = e.target.value === '' ? null : +e.target.value;
      refresh();
    });
    $('inverted').addEventListener('change', function (e) {
      state.inverted = e.target.checked;
      if (chart) chart.inverted(state.inverted).update();
    });
    $('reset-zoom').addEventListener('click', function () { if (chart) chart.resetZoom(); });
    $('whole-run').addEventListener('click', function () { setRange(null); });
    document.addEventListener('mousemove', function (e) { mouse.x = e.clientX; mouse.y = e.clientY; place(); });
    var resizeTimer = 0;
    var lastWidth = window.innerWidth;
    window.addEventListener('resize', function () {
      if (window.innerWidth === lastWidth) return;
      lastWidth = window.innerWidth;
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () {
        drawTimeline();
        if (chart) chart.width(flameWidth()).update();
      }, 120);
    });
  }

  function start() {
    try {
      model = readModel();
      if (!MODES[D.mode]) throw new Error('data: unknown mode ' + D.mode);
      $('flame-heading').textContent = 'Flamegraph: ' + MODES[D.mode].total.toLowerCase() + ' by stack';
      drawHeader();
      wire();
      drawTimeline();
      refresh();
      window.memprof.ready = true;
    } catch (e) {
      showError(String(e && e.message || e));
      throw e;
    }
  }

  window.memprof = {
    ready: false,
    nodeCount: function () { return document.querySelectorAll('#flamegraph svg g.frame > rect').length; },
    view: viewInfo,
    selectRange: function (i, j) { setRange(i, j); return viewInfo(); }
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
