-- The al-loop schema as `Base.metadata.create_all` made it at commit a2b6118 (before the Alembic migrations),
-- postgresql dialect, captured with SQLAlchemy's CreateTable/CreateIndex. Frozen: never regenerate it.

CREATE TABLE projects (
	id SERIAL NOT NULL,
	name VARCHAR(200) NOT NULL,
	task VARCHAR(20) NOT NULL,
	labels JSON NOT NULL,
	multi_label BOOLEAN NOT NULL,
	base_model VARCHAR(500) NOT NULL,
	loop_config JSON NOT NULL,
	training_config JSON NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (name)
);

CREATE TABLE simulations (
	id SERIAL NOT NULL,
	project_id INTEGER,
	name VARCHAR(200) NOT NULL,
	points JSON NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE items (
	id SERIAL NOT NULL,
	project_id INTEGER NOT NULL,
	item_id VARCHAR(200) NOT NULL,
	text TEXT NOT NULL,
	text_hash VARCHAR(64) NOT NULL,
	split VARCHAR(10) NOT NULL,
	n_words INTEGER NOT NULL,
	gold JSON,
	ext_task_id INTEGER,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_item UNIQUE (project_id, item_id),
	FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE INDEX ix_items_ext ON items (project_id, ext_task_id);

CREATE INDEX ix_items_project_split ON items (project_id, split);

CREATE TABLE label_studio_links (
	project_id INTEGER NOT NULL,
	ls_project_id INTEGER NOT NULL,
	url VARCHAR(1000),
	label_config TEXT,
	attached BOOLEAN NOT NULL,
	model_version VARCHAR(200),
	ml_backend_status VARCHAR(30),
	ml_backend_url VARCHAR(1000),
	ml_backend_id INTEGER,
	ml_backend_error TEXT,
	needs_reconcile BOOLEAN NOT NULL,
	last_reconcile JSON,
	config_warning TEXT,
	PRIMARY KEY (project_id),
	FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE,
	UNIQUE (ls_project_id)
);

CREATE TABLE labels (
	id SERIAL NOT NULL,
	project_id INTEGER NOT NULL,
	item_id VARCHAR(200) NOT NULL,
	annotation_key VARCHAR(200) NOT NULL,
	source VARCHAR(30) NOT NULL,
	payload JSON NOT NULL,
	annotator VARCHAR(200),
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	version_at TIMESTAMP WITHOUT TIME ZONE,
	received_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	skipped BOOLEAN NOT NULL,
	deleted BOOLEAN NOT NULL,
	lead_time FLOAT,
	PRIMARY KEY (id),
	CONSTRAINT uq_annotation UNIQUE (project_id, annotation_key),
	FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE INDEX ix_labels_item ON labels (project_id, item_id);

CREATE TABLE model_versions (
	id SERIAL NOT NULL,
	project_id INTEGER NOT NULL,
	round_id INTEGER,
	name VARCHAR(200) NOT NULL,
	base_model VARCHAR(500) NOT NULL,
	schema_hash VARCHAR(32) NOT NULL,
	labels JSON NOT NULL,
	metrics JSON NOT NULL,
	train_report JSON NOT NULL,
	artifact_path VARCHAR(1000) NOT NULL,
	status VARCHAR(20) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	promoted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_version_name UNIQUE (project_id, name),
	FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE TABLE rejected_annotations (
	id SERIAL NOT NULL,
	project_id INTEGER NOT NULL,
	annotation_id INTEGER NOT NULL,
	task_id INTEGER,
	item_id VARCHAR(200),
	updated_at VARCHAR(64) NOT NULL,
	type VARCHAR(100) NOT NULL,
	error TEXT NOT NULL,
	at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_rejected_version UNIQUE (project_id, annotation_id, updated_at),
	FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE INDEX ix_rejected_project ON rejected_annotations (project_id, id);

CREATE TABLE rounds (
	id SERIAL NOT NULL,
	project_id INTEGER NOT NULL,
	index INTEGER NOT NULL,
	status VARCHAR(20) NOT NULL,
	phase VARCHAR(20) NOT NULL,
	progress FLOAT NOT NULL,
	trigger VARCHAR(30) NOT NULL,
	strategy VARCHAR(50) NOT NULL,
	batch_size INTEGER NOT NULL,
	seed INTEGER NOT NULL,
	n_labels INTEGER,
	n_tokens INTEGER,
	version_tag VARCHAR(200),
	model_version_id INTEGER,
	metrics JSON NOT NULL,
	timings JSON NOT NULL,
	report JSON NOT NULL,
	push_status VARCHAR(20) NOT NULL,
	error TEXT,
	owner VARCHAR(200),
	attempts INTEGER NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	started_at TIMESTAMP WITHOUT TIME ZONE,
	heartbeat_at TIMESTAMP WITHOUT TIME ZONE,
	finished_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_round_index UNIQUE (project_id, index),
	FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE TABLE round_scores (
	id SERIAL NOT NULL,
	round_id INTEGER NOT NULL,
	item_id VARCHAR(200) NOT NULL,
	rank INTEGER NOT NULL,
	score FLOAT NOT NULL,
	selected BOOLEAN NOT NULL,
	prediction JSON,
	PRIMARY KEY (id),
	FOREIGN KEY(round_id) REFERENCES rounds (id) ON DELETE CASCADE
);

CREATE INDEX ix_scores_round_rank ON round_scores (round_id, rank);
