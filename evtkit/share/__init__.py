"""Share: what people look at. Plots (:mod:`.plots`, one function per chart), the report
page (:mod:`.report`, a Jinja2 template in ``templates/``), notebook export to one offline
HTML file and the live capture view (:mod:`.notebook`)."""
