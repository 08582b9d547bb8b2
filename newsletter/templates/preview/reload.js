(function () {
  var version = {{ version|tojson }}, server = {{ server|tojson }};
  function poll() {
    fetch("/version", {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (d.version !== version || d.server !== server) { location.reload(); }
        else { setTimeout(poll, {{ every }}); }
      }, function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, {{ every }});
})();
