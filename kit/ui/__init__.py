"""The notebook cockpit (ipywidgets + plotly). Trading code never imports it."""
