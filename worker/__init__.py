"""Workers: the Celery app and tasks, job running, training recipes, the method registry, export.

Nothing at this package's top level imports torch: the studio imports `worker.methods` to build
its forms. The Celery app the tasks register on is `studio.celery_app`."""
