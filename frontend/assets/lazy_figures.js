/*
 * Figures are drawn when they come into view; the others one at a time while the browser is idle.
 *
 * Why: a trace page holds six plotly figures, and on a 2-core machine drawing them all took a fresh
 * browser ~0.8 s of one uninterrupted task, after plotly.js had been evaluated. Only the figures in the
 * window are needed to read and use the page, so those are drawn first; each of the others is drawn in
 * its own idle callback, so a click or a hover is answered between two of them, and scrolling a figure
 * into view draws it at once. Every figure is still drawn without scrolling, about a second later.
 *
 * How: dcc.Graph draws with `Plotly.react(gd, figure)` and waits for the promise it returns. This file
 * wraps `Plotly.react` as soon as plotly.js defines `window.Plotly`: a graph that has not been drawn yet
 * gets a promise that resolves once it has been drawn; until then its height is reserved (the figure's
 * layout.height) so the page does not jump, and the latest figure wins. Graphs already drawn are updated
 * at once, as before. `Plotly.purge` forgets a graph that is still waiting (the page was left).
 * `window.LayerTracerFigures.drawNow(gd)` draws a waiting graph at once (the PNG / SVG export uses it)
 * and `.waiting()` says how many graphs wait.
 */
(function () {
  'use strict';
  if (!('IntersectionObserver' in window) || Object.getOwnPropertyDescriptor(window, 'Plotly')) {
    return;  // an old browser, or plotly.js is already there: draw everything at once, as plotly does
  }
  var AHEAD = '200px';        // start drawing a figure this far before it scrolls into view
  var IDLE_TIMEOUT_MS = 1000; // draw the next waiting figure after this long even if the browser is never idle
  var realReact = null;
  var waiting = new Map();    // gd -> {args, promise, resolve, reject, minHeight}
  var idleQueue = [];         // graphs out of view, drawn in document order when the browser is idle
  var idleScheduled = false;
  var observer = null;

  function figureHeight(args) {
    var first = args[1];
    var layout = Array.isArray(first) ? args[2] : (first && first.layout);
    var height = layout && Number(layout.height);
    return height > 0 ? height : null;
  }

  // Stop waiting for ``gd``: its job (or null when it was not waiting), its reserved height released.
  function forget(gd) {
    var job = waiting.get(gd);
    if (!job) { return null; }
    waiting.delete(gd);
    observer.unobserve(gd);
    var at = idleQueue.indexOf(gd);
    if (at >= 0) { idleQueue.splice(at, 1); }
    gd.style.minHeight = job.minHeight;
    return job;
  }

  function draw(gd) {
    var job = forget(gd);
    if (!job) { return Promise.resolve(); }
    if (!gd.isConnected) { job.resolve(); return job.promise; }
    var drawn;
    try {
      drawn = realReact.apply(window.Plotly, job.args);
    } catch (err) {
      job.reject(err);
      return job.promise;
    }
    Promise.resolve(drawn).then(job.resolve, job.reject);
    return job.promise;
  }

  function inDocumentOrder(a, b) {
    return a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
  }

  function scheduleIdle() {
    if (idleScheduled || !idleQueue.length) { return; }
    idleScheduled = true;
    var later = window.requestIdleCallback || function (fn) { return setTimeout(fn, 50); };
    later(function () {
      idleScheduled = false;
      idleQueue.sort(inDocumentOrder);
      var gd = idleQueue.shift();
      if (gd) { draw(gd); }
      scheduleIdle();
    }, {timeout: IDLE_TIMEOUT_MS});
  }

  function onIntersection(entries) {
    var now = entries.filter(function (e) { return e.isIntersecting; }).map(function (e) { return e.target; });
    now.sort(inDocumentOrder).forEach(draw);
    entries.forEach(function (e) {
      if (!e.isIntersecting && waiting.has(e.target) && idleQueue.indexOf(e.target) < 0) { idleQueue.push(e.target); }
    });
    scheduleIdle();
  }

  function lazyReact(gd) {
    var args = Array.prototype.slice.call(arguments);
    var el = typeof gd === 'string' ? document.getElementById(gd) : gd;
    if (!el || el._fullLayout || !el.isConnected) {
      return realReact.apply(window.Plotly, args);  // drawn already (an update), or nothing to wait for
    }
    args[0] = el;
    var job = waiting.get(el);
    if (job) { job.args = args; return job.promise; }  // a newer figure for a graph still waiting
    job = {args: args, minHeight: el.style.minHeight};
    job.promise = new Promise(function (resolve, reject) { job.resolve = resolve; job.reject = reject; });
    var height = figureHeight(args);
    if (height) { el.style.minHeight = height + 'px'; }
    waiting.set(el, job);
    observer.observe(el);
    return job.promise;
  }

  function wrap(plotly) {
    if (!plotly || plotly.__layertracerLazy || typeof plotly.react !== 'function') { return; }
    realReact = plotly.react;
    var realPurge = plotly.purge;
    observer = new IntersectionObserver(onIntersection, {rootMargin: '0px 0px ' + AHEAD + ' 0px'});
    plotly.react = lazyReact;
    plotly.purge = function (gd) {
      var el = typeof gd === 'string' ? document.getElementById(gd) : gd;
      var job = el && forget(el);
      if (job) { job.resolve(); }
      return realPurge.apply(plotly, arguments);
    };
    plotly.__layertracerLazy = true;
  }

  window.LayerTracerFigures = {
    drawNow: function (gd) { return waiting.has(gd) ? draw(gd) : Promise.resolve(); },
    waiting: function () { return waiting.size; },
  };

  var current;
  Object.defineProperty(window, 'Plotly', {
    configurable: true,
    enumerable: true,
    get: function () { return current; },
    set: function (value) { current = value; wrap(value); },
  });
})();
