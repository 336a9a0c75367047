"""Training both model families: the seed's SR classifier (``sr_classifier``) and the reBEN/timm family (``timm``).

Both run on the structure in ``trainer`` (session, epoch loop, progress); configs, schedules,
GAN losses, data sources and run state each live in their own module. Nothing is imported here,
so importing one piece (``models.training.state`` for evaluation) does not load the others.
"""
