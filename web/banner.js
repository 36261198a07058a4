// A maintenance banner for your own site. Include it with
//   <script src="https://status.example.com/banner.js" defer></script>
// It asks the status page (the origin it was loaded from) whether maintenance is under
// way or scheduled, again whenever the page's event stream (/events) says something
// changed, and shows a dismissible banner at the top of the page while it is: in the
// page's flow, so it pushes the site's content down instead of covering it. Times are
// the status page's, in its time zone with the zone named. No dependencies; text is set
// with textContent only.
(function () {
  'use strict';

  var script = document.currentScript;
  if (!script) {
    var scripts = document.querySelectorAll('script[src]');
    for (var i = scripts.length - 1; i >= 0; i--) {
      if (/\/banner\.js(?:[?#].*)?$/.test(scripts[i].src)) {
        script = scripts[i];
        break;
      }
    }
  }
  if (!script || typeof window.fetch !== 'function') {
    return;
  }
  var origin;
  try {
    origin = new URL(script.src, location.href).origin;
  } catch (e) {
    return;
  }

  // Without an event stream (or while it is down), a slow poll.
  var POLL_MS = 600000;
  var ID = 'runbook-maintenance-banner';
  var dismissedKey = 'runbook-banner-dismissed:' + origin;
  var banner = null;
  var shown = '';

  function dismissed() {
    try {
      return window.sessionStorage.getItem(dismissedKey);
    } catch (e) {
      return null;
    }
  }

  function remember(key) {
    try {
      window.sessionStorage.setItem(dismissedKey, key);
    } catch (e) {
      // Storage blocked: the banner comes back on the next poll.
    }
  }

  // Only http(s) links, resolved against the status page.
  function safeUrl(url) {
    try {
      var u = new URL(url || '/', origin);
      return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : origin + '/';
    } catch (e) {
      return origin + '/';
    }
  }

  function remove() {
    if (banner && banner.parentNode) {
      banner.parentNode.removeChild(banner);
    }
    banner = null;
    shown = '';
  }

  function styled(tag, styles) {
    var el = document.createElement(tag);
    for (var name in styles) {
      if (Object.prototype.hasOwnProperty.call(styles, name)) {
        el.style[name] = styles[name];
      }
    }
    return el;
  }

  function show(data) {
    var m = data.maintenance || null;
    var scheduled = data.status === 'scheduled' && !data.closed;
    var key = [data.status, data.closed, m && m.id].join('|');
    if (dismissed() === key) {
      remove();
      return;
    }

    var text;
    if (data.message) {
      text = String(data.message);
    } else if (scheduled) {
      text = 'Scheduled maintenance' + (m && m.title ? ': ' + m.title : '') + '.';
    } else if (data.closed) {
      text = 'The service is unavailable for maintenance.';
    } else {
      text = 'Maintenance is under way' + (m && m.title ? ': ' + m.title : '') + '.';
    }
    var detail = '';
    var eta = data.eta_local ? String(data.eta_local) : '';
    if (scheduled && m && m.scheduled_for_local) {
      detail = 'Starts ' + String(m.scheduled_for_local) +
        (m.scheduled_until_local ? ', until ' + String(m.scheduled_until_local) : '') + '.';
    } else if (!scheduled && data.late) {
      detail = 'Taking longer than expected.';
    } else if (!scheduled && eta && text.indexOf(eta) === -1) {
      // The update's own text usually says when; never twice.
      detail = 'Expected back by ' + eta + '.';
    }

    var href = safeUrl(m && m.url ? m.url : '/');
    var signature = [key, text, detail, href].join('\n');
    if (banner && banner.parentNode && shown === signature) {
      return; // Unchanged: leave it be, so screen readers are not told again.
    }
    remove();
    shown = signature;
    var colors = scheduled
      ? { background: '#e1edfb', color: '#0b3d73', border: '#0b5cad' }
      : { background: '#fff0d6', color: '#5c2f00', border: '#9a4a00' };
    banner = styled('div', {
      position: 'relative', zIndex: '2147483647',
      display: 'flex', flexWrap: 'wrap', alignItems: 'center', gap: '0.25em 1em',
      margin: '0', padding: '0.6em 3em 0.6em 1em', boxSizing: 'border-box',
      background: colors.background, color: colors.color,
      borderBottom: '2px solid ' + colors.border,
      font: '15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif',
      textAlign: 'left', boxShadow: '0 2px 6px rgba(0, 0, 0, 0.15)'
    });
    banner.id = ID;
    banner.setAttribute('role', 'status');
    banner.setAttribute('aria-live', 'polite');

    var message = styled('strong', { fontWeight: '600', color: 'inherit' });
    message.textContent = text;
    banner.appendChild(message);

    if (detail) {
      var eta = styled('span', { color: 'inherit' });
      eta.textContent = detail;
      banner.appendChild(eta);
    }

    var link = styled('a', { color: 'inherit', textDecoration: 'underline', fontWeight: '600' });
    link.href = href;
    link.textContent = 'Status page';
    link.rel = 'noopener';
    banner.appendChild(link);

    var close = styled('button', {
      position: 'absolute', top: '50%', right: '0.5em', transform: 'translateY(-50%)',
      margin: '0', padding: '0.1em 0.45em', border: '1px solid currentColor',
      borderRadius: '4px', background: 'transparent', color: 'inherit',
      font: 'inherit', fontSize: '18px', lineHeight: '1', cursor: 'pointer'
    });
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss maintenance notice');
    close.textContent = '\u00d7';
    close.addEventListener('click', function () {
      remember(key);
      remove();
    });
    banner.appendChild(close);

    if (document.body) {
      document.body.insertBefore(banner, document.body.firstChild);
    }
  }

  function poll() {
    return fetch(origin + '/api/v1/maintenance', { cache: 'no-cache', credentials: 'omit' })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (!data) {
          return;
        }
        var relevant = data.closed === true || data.status === 'in_progress' ||
          data.status === 'verifying' || data.status === 'scheduled';
        if (relevant) {
          show(data);
        } else {
          remove();
        }
      })
      .catch(function () {
        // The status page is unreachable: keep whatever is shown, try again later.
      });
  }

  function start() {
    poll();
    window.setInterval(poll, POLL_MS);
    if (typeof window.EventSource !== 'function') {
      return;
    }
    // Each `update` event says the page changed: ask again (a burst costs one request
    // at a time). On an error EventSource reconnects by itself.
    var asking = false;
    var again = false;
    function ask() {
      if (asking) {
        again = true;
        return;
      }
      asking = true;
      poll().then(function () {
        asking = false;
        if (again) {
          again = false;
          ask();
        }
      });
    }
    try {
      var events = new window.EventSource(origin + '/events');
      events.addEventListener('update', ask);
    } catch (e) {
      // No stream: the slow poll stays.
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
