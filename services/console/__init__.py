"""The console: aiport's web UI (public pages now; the dashboard later), served
as server-rendered HTML behind the same Envoy edge as the API."""
