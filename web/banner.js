// A maintenance banner for your own site. Include it with
//   <script src="https://status.example.com/banner.js" defer></script>
// It asks the status page (the origin it was loaded from) whether maintenance is under
// way or scheduled, every minute, and shows a dismissible banner at the top of the
// page while it is. No dependencies; text is set with textContent only.
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

  var POLL_MS = 60000;
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

  function when(isoString) {
    if (!isoString) {
      return '';
    }
    var d = new Date(isoString);
    if (isNaN(d.getTime())) {
      return '';
    }
    try {
      return d.toLocaleString(undefined, {
        weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit'
      });
    } catch (e) {
      return d.toString();
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
    if (scheduled && m && m.scheduled_for) {
      detail = 'Starts ' + when(m.scheduled_for) +
        (m.scheduled_until ? ', until ' + when(m.scheduled_until) : '') + '.';
    } else if (!scheduled && data.late) {
      detail = 'Taking longer than expected.';
    } else if (!scheduled && (data.eta_local || data.eta)) {
      detail = 'Expected back by ' + (data.eta_local ? String(data.eta_local) : when(data.eta)) + '.';
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
      position: 'fixed', top: '0', left: '0', right: '0', zIndex: '2147483647',
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
    fetch(origin + '/api/v1/maintenance', { cache: 'no-cache', credentials: 'omit' })
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
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
