"""bulk-sender: send WhatsApp catalog messages in bulk through Kaleyra's API.

Rate-limited, crash-safe (a durable journal makes every run resumable) and built so that no
recipient gets the same message twice because of us.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
