"""The benchmark's reference apps as factories for the production server (todo/serve.py).

Each is built in its worker and frozen out of the garbage collector's way, exactly as
`todo serve` does with the service, so that all three apps run under the same settings.
"""

import gc


def ceiling():
    """Return the ceiling app (raw DB-API driver), frozen."""
    from bench.ceiling import app

    gc.freeze()
    return app


def floor():
    """Return the Flask floor app, frozen."""
    from bench.flask_floor import app

    gc.freeze()
    return app
