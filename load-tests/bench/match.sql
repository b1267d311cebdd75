-- Seeds :users users into the tenant schema named by :schema, shaped like Entra's creates.
set search_path to :"schema";
insert into users (id, user_name, work_email, emails, given_name, family_name, source,
                   fusionauth_link)
select gen_random_uuid(),
       'user' || n || '@contoso.com',
       'user' || n || '@contoso.com',
       jsonb_build_array(jsonb_build_object('value', 'user' || n || '@contoso.com',
                                            'type', 'work', 'primary', true)),
       'Given' || n, 'Family' || n, 'scim', 'skipped'
from generate_series(1, :users) as n
on conflict do nothing;
analyze users;
