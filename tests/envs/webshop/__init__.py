"""WebShopEnv: the offline catalog and WebShop's real data files."""
