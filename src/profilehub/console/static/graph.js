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
  var cy = cytoscape({
    container: holder,
    elements: data.nodes.concat(data.edges),
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: {
        "label": "data(label)", "font-size": 9, "text-wrap": "wrap", "text-valign": "bottom",
        "text-margin-y": 3, "color": "#333", "width": 14, "height": 14, "background-color": "#8aa" } },
      { selector: "node[kind = 'master']", style: {
        "background-color": "#2f5d8a", "width": 30, "height": 30, "font-size": 11, "font-weight": "bold" } },
      { selector: "node[kind = 'merged']", style: { "background-color": "#d08c2b", "width": 20, "height": 20 } },
      { selector: "node[kind = 'id']", style: { "shape": "round-rectangle", "background-color": "#7fae7f" } },
      { selector: "edge", style: {
        "width": 1, "line-color": "#bbb", "curve-style": "straight", "label": "data(label)",
        "font-size": 7, "color": "#8a5a14", "text-rotation": "autorotate", "text-background-color": "#fff",
        "text-background-opacity": 0.8 } }
    ],
    layout: {
      name: "concentric",
      concentric: function (node) {
        var kind = node.data("kind");
        return kind === "master" ? 3 : kind === "merged" ? 2 : 1;
      },
      levelWidth: function () { return 1; },
      minNodeSpacing: 24,
      animate: false
    }
  });
  holder.setAttribute("data-drawn", String(cy.nodes().length));
})();
