// Live updates for the status page. The page is complete without this script: it only
// swaps in the server-rendered <main id="content"> when the server says something
// changed (Server-Sent Events on /events, event `update`, data {"version": N}).
(function () {
  'use strict';

  if (typeof window.EventSource !== 'function' || typeof window.fetch !== 'function' ||
      typeof window.DOMParser !== 'function') {
    return;
  }

  var lastVersion = null;
  var busy = false;
  var again = false;

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function say(text) {
    var live = document.getElementById('live');
    if (live) {
      live.textContent = text;
    }
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var next = doc.querySelector('main#content');
    var current = document.querySelector('main#content');
    if (!next || !current) {
      return;
    }
    if (next.innerHTML !== current.innerHTML) {
      var fragment = document.createDocumentFragment();
      while (next.firstChild) {
        fragment.appendChild(document.adoptNode(next.firstChild));
      }
      while (current.firstChild) {
        current.removeChild(current.firstChild);
      }
      current.appendChild(fragment);
      var now = new Date();
      say('Updated ' + pad(now.getHours()) + ':' + pad(now.getMinutes()));
    }
    if (doc.title) {
      document.title = doc.title;
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    if (document.hidden) {
      // Fetched when the tab is shown again.
      again = true;
      return;
    }
    busy = true;
    again = false;
    fetch(location.pathname, { cache: 'no-cache', credentials: 'same-origin' })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          swap(html);
        }
      })
      .catch(function () {
        // Offline or the server restarting: the next update tries again.
      })
      .then(function () {
        busy = false;
        if (again) {
          refresh();
        }
      });
  }

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden && again) {
      refresh();
    }
  });

  var events;
  try {
    events = new EventSource('/events');
  } catch (e) {
    return;
  }
  events.addEventListener('update', function (event) {
    var version = null;
    try {
      version = JSON.parse(event.data).version;
    } catch (e) {
      // Not JSON: refresh anyway.
    }
    if (version !== null && version !== undefined && version === lastVersion) {
      return;
    }
    lastVersion = version;
    refresh();
  });
  // On an error EventSource reconnects by itself; nothing to do here.
  events.onerror = function () {};
})();
