// The sandbox Maps result list: fetches /search pages as the feed is scrolled, like Google Maps.
// Config comes from window.__LEADFLOW_SEARCH = {query, vp, pageSize}.
// Exposes window.__LEADFLOW_PAYLOADS (every search payload received, parsed, in order) and
// window.__LEADFLOW_STATE ({loaded, done, total, error}) for browser spiders.
(function () {
  "use strict";
  var cfg = window.__LEADFLOW_SEARCH || {};
  var feed = document.querySelector('div[role="feed"]');
  var sentinel = document.createElement("div");
  sentinel.className = "feed-sentinel";
  sentinel.style.height = "1px";
  feed.appendChild(sentinel);

  var payloads = (window.__LEADFLOW_PAYLOADS = window.__LEADFLOW_PAYLOADS || []);
  var state = (window.__LEADFLOW_STATE = { loaded: 0, done: false, total: null, error: null });
  var offset = 0;
  var loading = false;

  function dig(node) {
    for (var i = 1; i < arguments.length; i++) {
      if (!Array.isArray(node) || arguments[i] >= node.length) return null;
      node = node[arguments[i]];
    }
    return node === undefined ? null : node;
  }

  function text(tag, cls, value) {
    var el = document.createElement(tag);
    el.className = cls;
    el.textContent = value;
    return el;
  }

  function placeLink(name, dataId) {
    return "/maps/place/" + encodeURIComponent(name).replace(/%20/g, "+") +
      "/data=!4m2!3m1!1s" + dataId;
  }

  function render(place) {
    var name = dig(place, 11) || "";
    var dataId = dig(place, 10) || "";
    var row = document.createElement("div");
    row.className = "place";
    row.setAttribute("data-data-id", dataId);
    row.setAttribute("data-place-id", dig(place, 78) || "");
    var link = document.createElement("a");
    link.className = "hfpxzc";
    link.href = placeLink(name, dataId);
    link.setAttribute("aria-label", name);
    link.textContent = name;
    row.appendChild(link);
    var rating = dig(place, 4, 7);
    if (rating !== null) {
      row.appendChild(text("span", "rating", String(rating)));
      row.appendChild(text("span", "reviews", "(" + (dig(place, 4, 8) || 0) + ")"));
    }
    var category = dig(place, 13, 0);
    if (category) row.appendChild(text("div", "category", category));
    var address = dig(place, 39);
    if (address) row.appendChild(text("div", "address", address));
    var phone = dig(place, 178, 0, 0);
    if (phone) row.appendChild(text("div", "phone", phone));
    var website = dig(place, 7, 0);
    if (website) {
      var site = document.createElement("a");
      site.className = "website";
      site.href = website;
      site.textContent = dig(place, 7, 1) || website;
      row.appendChild(site);
    }
    var status = dig(place, 203, 1, 4, 0);
    if (status) row.appendChild(text("div", "status", status));
    feed.insertBefore(row, sentinel);
  }

  function finish() {
    state.done = true;
    if (sentinel.parentNode) sentinel.parentNode.removeChild(sentinel);
    if (!state.loaded) feed.appendChild(text("div", "no-results", "No results found."));
    feed.appendChild(text("div", "end-of-list", "You've reached the end of the list."));
  }

  function searchUrl() {
    var params = "tbm=map&q=" + encodeURIComponent(cfg.query || "") +
      "&offset=" + offset + "&num=" + (cfg.pageSize || 20);
    if (cfg.vp) params += "&vp=" + encodeURIComponent(cfg.vp);
    return "/search?" + params;
  }

  function challenge() {
    // The API call was sent to the CAPTCHA page: show it for this page (as Google does), so
    // the user (or a browser spider) solves it and comes back here.
    window.location.href = "/sorry/index?continue=" + encodeURIComponent(window.location.href);
  }

  function loadMore() {
    if (loading || state.done) return;
    loading = true;
    fetch(searchUrl(), { credentials: "same-origin", redirect: "manual" })
      .then(function (resp) {
        if (resp.type === "opaqueredirect" || resp.status === 302 || resp.status === 429) {
          challenge();
          throw new Error("challenged");
        }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (body) {
        var payload = JSON.parse(body.d.slice(body.d.indexOf("\n") + 1));
        payloads.push(payload);
        var items = dig(payload, 0, 1) || [];
        var count = 0;
        for (var i = 0; i < items.length; i++) {
          var place = dig(items[i], 14);
          if (Array.isArray(place)) {
            render(place);
            count++;
          }
        }
        offset += count;
        state.loaded += count;
        state.total = body.leadflow ? body.leadflow.total : state.total;
        state.error = null;
        loading = false;
        var more = body.leadflow ? body.leadflow.has_more : count > 0;
        if (!more || count === 0) finish();
        else if (feed.scrollHeight <= feed.clientHeight) loadMore(); // nothing to scroll yet
      })
      .catch(function (err) {
        state.error = String(err);
        loading = false;
      });
  }

  function nearBottom() {
    return feed.scrollTop + feed.clientHeight >= feed.scrollHeight - 40;
  }

  // Both triggers Google's feed reacts to: the sentinel scrolling into view, and the scroll
  // position of the feed itself (what a spider's `scrollTop = scrollHeight` produces).
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(
      function (entries) {
        for (var i = 0; i < entries.length; i++) if (entries[i].isIntersecting) loadMore();
      },
      { root: feed, rootMargin: "0px 0px 40px 0px" }
    ).observe(sentinel);
  }
  feed.addEventListener("scroll", function () {
    if (nearBottom()) loadMore();
  });
  loadMore();
})();
