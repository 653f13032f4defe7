"""Watching inboxes: what is an input, when a file is complete, and whether the inbox is there.

Plain classes and functions, free of asyncio: the daemon drives them from its loop, and the
watchdog observers call back on their own threads only to enqueue a path.
"""
