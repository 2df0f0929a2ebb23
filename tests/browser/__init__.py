"""Browser tests of the Cruddur pages (backend/web/), served through Envoy and driven with Selenium + chromium."""
