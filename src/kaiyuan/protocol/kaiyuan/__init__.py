"""kaiyuan's own API (no other server has it): the admin routes for API keys."""
