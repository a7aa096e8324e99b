// Draws the identity graph of the page's person with the vendored cytoscape.js. The data comes
// from the page itself (a JSON script element), so no request and no inline script is needed.
(function () {
  "use strict";
  var holder = document.getElementById("graph");
  var source = document.getElementById("graph-data");
  if (!holder || !source || typeof cytoscape !== "function") {
    return;
  }
  var data = JSON.parse(source.textContent);

  // A fixed layout that reads the same way for every person: the person in the middle, the
  // profiles merged into it on rings to the left, its ids to the right, boxed by namespace.
  function positions(nodes) {
    var at = {};
    var merged = nodes.filter(function (n) { return n.data.kind === "merged"; });
    var perRing = 18;
    merged.forEach(function (n, i) {
      var ring = Math.floor(i / perRing);
      var onRing = Math.min(perRing, merged.length - ring * perRing);
      var angle = Math.PI / 2 + Math.PI * (onRing === 1 ? 0.5 : (i % perRing) / (onRing - 1));
      var radius = 190 + 70 * ring;
      at[n.data.id] = { x: radius * Math.cos(angle), y: -radius * Math.sin(angle) * 0.9 };
    });
    var perRow = 3;
    var y = 0;
    var boxes = nodes.filter(function (n) { return n.data.kind === "namespace"; });
    boxes.forEach(function (box) {
      var ids = nodes.filter(function (n) { return n.data.parent === box.data.id; });
      ids.forEach(function (n, i) {
        at[n.data.id] = { x: 230 + (i % perRow) * 135, y: y + Math.floor(i / perRow) * 48 };
      });
      y += Math.ceil(ids.length / perRow) * 48 + 55;
    });
    var shift = (y - 55 - 48) / 2;
    Object.keys(at).forEach(function (id) {
      var node = nodes.find(function (n) { return n.data.id === id; });
      if (node && node.data.kind === "id") { at[id].y -= shift; }
    });
    nodes.forEach(function (n) {
      if (n.data.kind === "master") { at[n.data.id] = { x: 0, y: 0 }; }
    });
    return at;
  }
  var cy = cytoscape({
    container: holder,
    elements: data.nodes.concat(data.edges),
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: {
        "label": "data(label)", "font-size": 9, "text-wrap": "wrap", "text-valign": "bottom",
        "text-margin-y": 3, "color": "#333", "width": 14, "height": 14, "background-color": "#8aa" } },
      { selector: "node[kind = 'master']", style: {
        "background-color": "#2f5d8a", "width": 34, "height": 34, "font-size": 11, "font-weight": "bold" } },
      { selector: "node[kind = 'merged']", style: { "background-color": "#d08c2b", "width": 20, "height": 20 } },
      { selector: "node[kind = 'id']", style: { "shape": "round-rectangle", "background-color": "#7fae7f" } },
      { selector: "node[kind = 'namespace']", style: {
        "shape": "round-rectangle", "background-color": "#eef4ee", "border-color": "#b9d2b9", "border-width": 1,
        "text-valign": "top", "text-margin-y": -4, "font-size": 11, "font-weight": "bold", "color": "#3d6b3d",
        "padding": 10 } },
      { selector: "edge", style: { "width": 1, "line-color": "#c5ced8", "curve-style": "straight" } },
      { selector: "edge[kind = 'merge']", style: {
        "width": 2, "line-color": "#e2b97a", "target-arrow-shape": "triangle", "target-arrow-color": "#d08c2b",
        "label": "data(label)", "font-size": 8, "color": "#8a5a14", "text-rotation": "autorotate",
        "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 1 } },
      { selector: "edge.quiet", style: { "label": "" } }
    ],
    layout: { name: "preset", positions: positions(data.nodes), fit: true, padding: 30 }
  });
  // Many merges: their labels would cover each other, so each shows when its edge is tapped.
  var merges = cy.edges("[kind = 'merge']");
  if (merges.length > 12) {
    merges.addClass("quiet");
  }
  // A tapped edge shows its label, with the merge's time.
  cy.on("tap", "edge[kind = 'merge']", function (event) {
    var edge = event.target;
    edge.removeClass("quiet");
    var label = edge.data("label");
    var when = edge.data("when");
    if (when && label.indexOf(when) < 0) {
      edge.data("label", label + " · " + when);
    }
  });
  holder.setAttribute("data-drawn", String(cy.nodes().length));
})();
