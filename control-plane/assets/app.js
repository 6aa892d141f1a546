// KubeChat web app: reads chat streams (`logs -f`, `get -w`) as
// Server-Sent Events into their transcript entry, as text only.
(function () {
  'use strict';
  function start(el) {
    if (el.dataset.started) return;
    el.dataset.started = '1';
    const out = el.querySelector('pre.lines');
    const status = el.querySelector('.stream-status');
    const add = (text) => out.append(text + '\n');
    const es = new EventSource(el.dataset.stream);
    es.addEventListener('line', (e) => add(e.data));
    ['added', 'modified', 'deleted'].forEach((kind) =>
      es.addEventListener(kind, (e) => {
        let d = {};
        try { d = JSON.parse(e.data); } catch (_) { /* shown as is */ }
        add(kind.toUpperCase() + ' ' + (d.namespace ? d.namespace + '/' : '') + (d.name || e.data));
      }));
    es.addEventListener('end', (e) => {
      let reason = '';
      try { reason = JSON.parse(e.data).reason; } catch (_) { /* none */ }
      status.textContent = 'Stream ended: ' + reason + '.';
      el.dataset.ended = reason || 'ended';
      es.close();
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED && !el.dataset.ended) {
        status.textContent = 'The stream could not be opened or was cut; ask again.';
        el.dataset.ended = 'error';
      }
    };
  }
  function init(root) {
    (root || document).querySelectorAll('[data-stream]').forEach(start);
  }
  document.addEventListener('DOMContentLoaded', () => init());
  document.addEventListener('htmx:afterSwap', (e) => init(e.target));
})();
