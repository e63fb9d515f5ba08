"""LayerTracer's Dash dashboard: talks to the API over HTTP only; never imports torch."""
