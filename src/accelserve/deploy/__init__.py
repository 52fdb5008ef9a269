"""Deploying a model repository past one process: Ray Serve (``deploy.ray``), the Ray resources a
group of models needs (``deploy.resources``), and how models are split into groups
(``deploy.groups``). Only ``deploy.ray`` and ``deploy.replica`` import Ray."""
