// SPDX-License-Identifier: Apache-2.0
// cniprof report.html: draws the flame graphs from the JSON embedded in the page (#cniprof-data) with the
// vendored d3-flame-graph. Nothing is fetched: the page's Content-Security-Policy forbids any connection.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cniprof-data").textContent);
  var FADE_MS = 300;

  function chartWidth(el) {
    return Math.max(320, Math.floor(el.getBoundingClientRect().width));
  }

  // CPU profile: a name table and nested [name index, samples, children] arrays (compact for big profiles).
  function cpuTree(p) {
    function build(a) {
      var node = { name: p.names[a[0]], value: a[1], k: a[0] };
      if (a.length > 2) node.children = a[2].map(build);
      return node;
    }
    return build(p.tree);
  }

  function pct(v, total) {
    return total > 0 ? (100 * v / total).toFixed(2) + " %" : "";
  }

  function makeChart(el, root, opts) {
    var details = document.getElementById(el.id + "-details");
    var chart = flamegraph.default()
      .width(chartWidth(el))
      .cellHeight(18)
      .minFrameSize(1)
      .transitionDuration(FADE_MS)
      .sort(opts.sort)
      .title("");
    if (opts.rows) chart.height(opts.rows * 18 + 6); // the default leaves room for a title and two empty rows
    chart.setColorMapper(function (d, original) {
      return d.highlight ? "#e600e6" : (opts.color(d) || original);
    });
    chart.setLabelHandler(opts.text);
    chart.tooltip(flamegraph.tooltip.defaultFlamegraphTooltip().text(opts.text));
    chart.setSearchMatch(function (d, term) {
      var name = d.data.name || "";
      return !!term && name.toLowerCase().indexOf(term.toLowerCase()) >= 0;
    });
    chart.setSearchHandler(function (results, sum, total) {
      if (details) {
        details.textContent = results.length
          ? results.length + " frames match: " + sum.toLocaleString() + " " + opts.unit + " (" + pct(sum, total) + ")"
          : "no frame matches";
      }
    });
    if (details) chart.setDetailsElement(details);
    d3.select(el).datum(root).call(chart);
    el.cniprofChart = chart;
    return chart;
  }

  function hopFlame(el, flame) {
    makeChart(el, flame.tree, {
      sort: false, // path order, not alphabetical
      rows: 3, // end-to-end, nodes, hops
      unit: "µs",
      color: function (d) { return d.data.color; },
      text: function (d) { return d.data.tip || d.data.name; },
    });
  }

  function cpuFlame(el, profile) {
    var total = profile.tree[1];
    var chart = makeChart(el, cpuTree(profile), {
      sort: true,
      unit: "samples",
      color: function (d) { return profile.colors[d.data.k]; },
      text: function (d) {
        var comp = profile.components[d.data.k];
        return d.data.name + " · " + d.data.value.toLocaleString() + " samples (" + pct(d.data.value, total) + ")" +
          (comp ? " · " + comp : "");
      },
    });
    var box = el.parentNode;
    var input = box.querySelector("input.search");
    function search() {
      if (input.value) chart.search(input.value); else chart.clear();
    }
    box.querySelector("form").addEventListener("submit", function (ev) { ev.preventDefault(); search(); });
    box.querySelector("button.reset").addEventListener("click", function () {
      input.value = "";
      chart.clear();
      chart.resetZoom();
    });
  }

  data.hop_flames.forEach(function (f) { hopFlame(document.getElementById(f.id), f); });
  data.cpu_flames.forEach(function (f) { cpuFlame(document.getElementById(f.id), f); });
  document.documentElement.setAttribute("data-rendered", "1");
})();
