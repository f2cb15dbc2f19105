"""Data layer: dataset readers, video frame sampling and on-disk caches.

Used by training, evaluation and the bag tools; imports nothing above it
(no evaluation, no ROS).
"""
