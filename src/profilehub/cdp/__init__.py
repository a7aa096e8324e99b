"""The CDP dialect (``/cdp/v1/users``): thin routes over ``profilehub.profiles``."""
