"""Edges of the system: image message codecs, Cityscapes-style folders, rosbag2 files."""
