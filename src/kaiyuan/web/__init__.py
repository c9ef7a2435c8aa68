"""The web app (issue 20): hand-written ES modules and CSS, served by ``kaiyuan serve`` at /."""
